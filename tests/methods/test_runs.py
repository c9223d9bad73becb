"""Every method trains a few steps and evaluates on every head kind; what each method trains; stage reuse."""

from __future__ import annotations

import math

import pytest
import torch

from bench.experiment import alpha_sweep, run_experiment
from bench.methods import get_method, method_names
from hybridft.models import head_parameter_names

from .conftest import TASKS, tiny_run

RESULT_KEYS = {
    "metrics",
    "shift_metrics",
    "shift_skipped",
    "shift_eval_time_s",
    "headline_metric",
    "headline",
    "trainable_params",
    "total_params",
    "train_time_s",
    "eval_time_s",
    "peak_memory_mb",
    "train_samples_per_s",
    "subsets",
    "status",
    "majority_baseline",
    "failed_to_learn",
    "extra_metrics",
    "eval_stats",
    "collapsed",
    "peak_memory_source",
    "method_extra",
    "train_tokens",
    "forward_tokens",
    "optimizer_steps",
    "train_flops",
    "stages",
    "curves",
}


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_every_method_trains_and_evaluates(task, data_dir, stage_cache, tmp_path):
    from bench.tasks import get_task

    for method in method_names():
        if not get_method(method).supports(get_task(task).kind):
            continue  # causal-LM only (zero_shot): tests/methods/test_lm_runs.py; classification only (multi-task)
        cfg = tiny_run(task, method, data_dir, learning_rate=None)
        result = run_experiment(cfg, work_dir=tmp_path / method, cache_dir=stage_cache, progress=False)
        builds_teachers = "lp" in [s["stage"] for s in result["stages"]]
        classifier = {"prediction_share"} if get_task(task).kind == "classification" else set()
        assert set(result) == RESULT_KEYS | classifier | (TEACHER_KEYS if builds_teachers else set()), method
        if builds_teachers:  # θ_pre's (and θ_fine's) quality beside every run that builds them
            scores = result["teacher_scores"]
            assert math.isfinite(scores["pre"]["eval"]) and isinstance(result["weak_teacher"], (bool, type(None)))
            assert (scores["fine"] is None) == (method == "lp"), method
            assert result["probe"]["l2"] in [g["l2"] for g in result["probe"]["grid"]], method
        if method == "lp":  # the probe trains nothing by gradient: one forward pass and a convex fit
            assert result["train_tokens"] == 0 and result["optimizer_steps"] == 0 and result["forward_tokens"] > 0
            assert result["train_flops"] > 0 and not result["curves"]
            continue
        assert result["status"] == "ok", method
        assert result["headline_metric"] in result["metrics"], method
        assert math.isfinite(result["headline"]), method
        assert 0 < result["trainable_params"] <= result["total_params"], method
        assert result["train_time_s"] > 0 and result["eval_time_s"] > 0, method
        assert result["train_samples_per_s"] > 0, method
        assert result["peak_memory_mb"] is None or result["peak_memory_mb"] >= 0, method
        assert result["train_tokens"] > 0 and result["optimizer_steps"] > 0 and result["train_flops"] > 0, method
        assert result["curves"] and all(len(c) > 0 for c in result["curves"].values()), method
        assert isinstance(result["failed_to_learn"], bool) and result["eval_stats"] is not None, method
        assert result["subsets"]["train"]["size"] == cfg.train_size, method
    leftovers = [p for p in stage_cache.rglob("*") if p.name.startswith((".tmp-", "tmp-"))]
    assert not leftovers, leftovers


TEACHER_KEYS = {"teacher_scores", "weak_teacher", "probe"}


def _trained(make_context, task, method, **method_args):
    ctx, _ = make_context(task, method, epochs=0.4)
    impl = get_method(method)
    return impl.train(ctx, impl.make_config(method_args))


def _encoder_names(model) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.startswith(model.base_model_prefix + ".")]


@pytest.mark.parametrize("task", ["sst2", "squad_devsplit"])
def test_lora_trains_only_low_rank_matrices_and_head(make_context, task):
    trained = _trained(make_context, task, "lora")
    trainable = [n for n, p in trained.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable), trainable
    assert any("modules_to_save" in n for n in trainable), "the task head must train"
    assert {n.split(".")[-4] for n in trainable if "lora_" in n} == {"query", "value"}
    assert trained.trainable_params == sum(p.numel() for p in trained.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("architecture", ["seq_bn", "double_seq_bn"])
def test_adapter_trains_only_adapters_and_head(make_context, architecture):
    ctx, _ = make_context("conll2003", "adapter", epochs=0.4)
    reference = ctx.build_model()
    trained = _trained(
        make_context, "conll2003", "adapter", architecture=architecture, learning_rate=1e-2, warmup_ratio=0.0
    )  # one step: under warmup its rate would be 0
    head = set(head_parameter_names(reference))
    trainable = [n for n, p in trained.model.named_parameters() if p.requires_grad]
    assert set(trainable) - head and all(".adapters." in n for n in set(trainable) - head)
    assert head <= set(trainable)
    # Pfeiffer: one adapter per layer after the feed-forward block; Houlsby: also one after attention.
    where = {n.split(".adapters.")[0].split(".layer.")[1].split(".", 1)[1] for n in trainable if ".adapters." in n}
    assert where == ({"output"} if architecture == "seq_bn" else {"output", "attention.output"})
    state = trained.model.state_dict()
    for name in _encoder_names(reference):  # the frozen backbone did not move; the head did
        assert torch.equal(state[name], reference.state_dict()[name]), name
    assert not torch.equal(state["classifier.weight"], reference.state_dict()["classifier.weight"])


def test_lp_trains_only_the_head(make_context):
    ctx, _ = make_context("stsb", "lp", epochs=0.4)
    reference = ctx.build_model()
    trained = _trained(make_context, "stsb", "lp")
    head = head_parameter_names(reference)
    assert trained.trainable_params == sum(p.numel() for n, p in reference.named_parameters() if n in head)
    state = trained.model.state_dict()
    for name in _encoder_names(reference):
        assert torch.equal(state[name], reference.state_dict()[name]), name
    assert not all(torch.equal(state[n], reference.state_dict()[n]) for n in head)


def test_stages_are_shared_across_methods_and_sweep_matches_endpoints(data_dir, tmp_path):
    cache = tmp_path / "cache"
    lp = run_experiment(tiny_run("sst2", "lp", data_dir), work_dir=tmp_path / "a", cache_dir=cache, progress=False)
    lp_ft = run_experiment(
        tiny_run("sst2", "lp_ft", data_dir), work_dir=tmp_path / "b", cache_dir=cache, progress=False
    )
    stages = sorted(p.name.split("-")[0] for p in (cache / "stages").iterdir())
    assert stages == ["lp", "lp_ft"]  # lp_ft reused the LP stage instead of training its own
    cfg = tiny_run("sst2", "wise_ft", data_dir)
    curve = alpha_sweep(cfg, (0.0, 0.5, 1.0), work_dir=tmp_path / "c", cache_dir=cache, progress=False)
    assert [point["alpha"] for point in curve] == [0.0, 0.5, 1.0]
    assert sorted(p.name.split("-")[0] for p in (cache / "stages").iterdir()) == stages
    assert curve[0]["metrics"] == lp_ft["metrics"]  # α = 0 is θ_fine
    assert curve[-1]["metrics"] == lp["metrics"]  # α = 1 is θ_pre
    with pytest.raises(ValueError, match="needs a method with LP and LP-FT stages"):
        alpha_sweep(tiny_run("sst2", "lora", data_dir), work_dir=tmp_path / "d", cache_dir=cache)


def test_diverged_run_is_reported(data_dir, tmp_path):
    cfg = tiny_run("sst2", "plain", data_dir, learning_rate=1e30, method_args=(("warmup_ratio", 0.0),))
    result = run_experiment(cfg, work_dir=tmp_path / "w", cache_dir=tmp_path / "c", progress=False)
    assert result["status"] == "diverged"


def test_unlabelled_split_joins_the_distillation_data_without_labels(make_context):
    from hybridft.methods.hybrid import distill_features

    ctx, _ = make_context("sst2", "hybrid")
    method = get_method("hybrid")
    config = method.make_config({"unlabeled_split": "test", "unlabeled_size": 8})
    features, info = distill_features(ctx, config)
    n = len(ctx.train_features)
    assert (info.split, info.size) == ("test", 8)
    assert len(features) == n + 8
    assert features["kd_index"] == list(range(n + 8))
    assert all(label == -100 for label in features["labels"][n:])
    assert features["labels"][:n] == ctx.train_features["labels"]
    trained = method.train(ctx, config)
    assert trained.fits[-1].samples == n + 8 and not trained.diverged
    assert trained.extra["unlabeled"]["size"] == 8
    with pytest.raises(ValueError, match="must not be the evaluation split 'validation'"):
        distill_features(ctx, method.make_config({"unlabeled_split": "validation"}))


@pytest.mark.parametrize("method", ["plain", "lora", "adapter"])
def test_training_is_deterministic_for_a_seed(make_context, method):
    states = []
    for _ in range(2):
        ctx, _ = make_context("conll2003", method, epochs=0.5)
        impl = get_method(method)
        states.append(impl.train(ctx, impl.make_config()).model.state_dict())
    assert states[0].keys() == states[1].keys()
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name


def test_linear_probe_runs_the_frozen_encoder_once_in_eval_mode(make_context):
    """Dropout in the frozen encoder would noise the probe's features: one pass, every module in eval mode, and the
    model's mode restored afterwards (LP-FT trains the encoder again)."""
    from hybridft.probe import linear_probe_model

    ctx, _ = make_context("sst2", "lp")
    model = ctx.build_model()
    model.train()
    seen = []
    hook = model.bert.encoder.register_forward_pre_hook(lambda m, args: seen.append((m.training, model.training)))
    fit, result = linear_probe_model(model, ctx.train_features, ctx.collator(), kind="classification", batch_size=8)
    hook.remove()
    assert len(seen) == -(-len(ctx.train_features) // 8)  # one pass over the features, not one per epoch
    assert all(encoder is False and outer is False for encoder, outer in seen)
    assert model.training and model.bert.encoder.training
    assert all(p.requires_grad for p in model.parameters())
    assert fit.stage == "lp" and fit.optimizer_steps == 0 and fit.forward_tokens > 0 and result.converged
