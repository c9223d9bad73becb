"""Every causal-LM method end to end on tiny-llama: records, shared stages, counted compute, never vocabulary logits
in the hybrid student's distillation, and the methods that do not apply to an LM refuse it by name."""

from __future__ import annotations

import math

import pytest
import torch

from bench.experiment import RunConfig, alpha_sweep, run_experiment
from bench.methods import get_method, method_names

LM_METHODS = [m for m in method_names() if get_method(m).supports("causal_lm")]


def _run(method: str, data_dir, task: str = "sst2_lm", **overrides) -> RunConfig:
    fields = dict(task=task, method=method, seed=5, model="tiny-llama", train_size=16, eval_size=8, max_length=80,
                  batch_size=8, eval_batch_size=8, data_dir=str(data_dir))  # fmt: skip
    return RunConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def lm_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lm_cache")


def test_the_lm_methods_are_the_expected_ones():
    assert set(LM_METHODS) == {"plain", "plain_matched", "adapter", "lora", "lora_paper", "wise_ft", "hybrid",
                               "kd_pre", "kd_fine", "zero_shot"}  # fmt: skip


@pytest.mark.parametrize("method", ["lp", "lp_ft", "hybrid_output"])
def test_methods_without_an_lm_form_refuse_by_name(method, data_dir, tmp_path):
    with pytest.raises(ValueError, match=rf"method '{method}' does not apply to task 'sst2_lm' of kind 'causal_lm'"):
        run_experiment(_run(method, data_dir), work_dir=tmp_path, cache_dir=tmp_path / "c", progress=False)


def test_zero_shot_refuses_an_encoder_task(data_dir, tmp_path):
    cfg = RunConfig(task="sst2", method="zero_shot", seed=0, model="tiny-bert", train_size=8, eval_size=8,
                    data_dir=str(data_dir))  # fmt: skip
    with pytest.raises(ValueError, match="zero_shot' does not apply to task 'sst2' of kind 'classification'"):
        run_experiment(cfg, work_dir=tmp_path, cache_dir=tmp_path / "c", progress=False)


def test_every_lm_method_runs_and_counts_its_compute(data_dir, lm_cache, tmp_path):
    results = {}
    for method in ["plain", "zero_shot", "lora", "adapter", "hybrid", "kd_pre", "kd_fine", "wise_ft", "plain_matched"]:
        results[method] = run_experiment(_run(method, data_dir), work_dir=tmp_path / method, cache_dir=lm_cache,
                                         progress=False)  # fmt: skip
        r = results[method]
        assert r["status"] == "ok" and math.isfinite(r["headline"]), method
        assert 0.0 <= r["headline"] <= 1.0 and r["headline_metric"] == "accuracy", method
        assert r["eval_stats"]["kind"] == "mean" and len(r["eval_stats"]["rows"]) == 8, method
    plain, hybrid = results["plain"], results["hybrid"]
    # θ_fine is plain's own cached stage: the same stage record, and only one "ft" artifact in the cache
    assert hybrid["stages"][0] == plain["stages"][0] and plain["stages"][0]["stage"] == "ft"
    assert len(list((lm_cache / "stages").glob("ft-*"))) == 1
    assert [s["stage"] for s in hybrid["stages"]] == ["ft", "teacher_hidden", "hybrid"]
    assert hybrid["train_flops"] == pytest.approx(sum(s["flops"] for s in hybrid["stages"]))
    assert hybrid["method_extra"]["teacher_cache_bytes_per_token"] == 2 * 64 * 4  # two teachers' H floats
    # a teacher with weight 0 is not run: one forward pass instead of two
    teacher = {m: next(s for s in results[m]["stages"] if s["stage"] == "teacher_hidden") for m in ("hybrid", "kd_pre")}
    assert teacher["kd_pre"]["forward_tokens"] * 2 == teacher["hybrid"]["forward_tokens"]
    assert results["zero_shot"]["train_flops"] == 0 and results["zero_shot"]["trainable_params"] == 0
    assert results["wise_ft"]["train_flops"] == plain["train_flops"]  # the mix costs no training
    assert 0 < results["lora"]["trainable_params"] < results["lora"]["total_params"]
    assert 0 < results["adapter"]["trainable_params"] < results["adapter"]["total_params"]
    # plain_matched: within one optimizer step of the hybrid pipeline's FLOPs
    per_step = plain["train_flops"] / plain["optimizer_steps"]
    assert abs(results["plain_matched"]["train_flops"] - hybrid["train_flops"]) <= per_step
    assert results["plain_matched"]["method_extra"]["lm_head_flops"] == "loss_rows"


def test_zero_shot_is_the_alpha_one_end_of_the_wise_ft_line(data_dir, lm_cache, tmp_path):
    zero = run_experiment(_run("zero_shot", data_dir), work_dir=tmp_path / "z", cache_dir=lm_cache, progress=False)
    curve = alpha_sweep(_run("wise_ft", data_dir), (1.0,), work_dir=tmp_path / "s", cache_dir=lm_cache, progress=False)
    assert curve[0]["metrics"] == zero["metrics"]


def test_the_hybrid_student_never_forms_vocabulary_logits(data_dir, lm_cache, tmp_path, monkeypatch):
    """Every (…, V) tensor any module returns while the hybrid method runs has one position per row at most: the
    teacher pass and the student's steps run the body only, the loss forms logits chunk by chunk inside
    hybrid_kd_linear_loss (not a module), and evaluation keeps the last position (logits_to_keep=1)."""
    run_experiment(_run("plain", data_dir), work_dir=tmp_path / "p", cache_dir=lm_cache, progress=False)  # θ_fine
    seen = []

    def record(module, args, output):
        logits = getattr(output, "logits", output)
        if isinstance(logits, torch.Tensor) and logits.dim() >= 2 and logits.shape[-1] == 49152:
            seen.append(tuple(logits.shape))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        run_experiment(_run("hybrid", data_dir), work_dir=tmp_path / "h", cache_dir=lm_cache, progress=False)
    finally:
        handle.remove()
    assert seen, "evaluation should have formed last-position logits"
    assert all(shape[-2] == 1 for shape in seen if len(shape) == 3), seen
    assert all(len(shape) == 3 for shape in seen), seen


def test_squad_lm_runs_plain_and_hybrid(data_dir, lm_cache, tmp_path):
    for method in ("plain", "hybrid"):
        cfg = _run(method, data_dir, task="squad_lm", train_size=6, eval_size=4, max_length=192)
        r = run_experiment(cfg, work_dir=tmp_path / method, cache_dir=lm_cache, progress=False)
        assert r["status"] == "ok" and r["headline_metric"] == "f1" and 0.0 <= r["headline"] <= 100.0
        assert r["majority_baseline"] == 0.0 and len(r["eval_stats"]["rows"]) == 4
