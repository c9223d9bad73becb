"""hybrid_lora and lora_matched: the in-place mix against float64 weight interpolation of the merged models, the
adapter-disabled teacher, what the student trains, stage sharing, and compute matching."""

from __future__ import annotations

import copy

import pytest
import torch

from bench.experiment import run_experiment
from bench.methods import get_method
from bench.methods.peft_hybrid import (
    AdapterDisabled,
    LoraMatchedConfig,
    lora_matched_epochs,
    lora_modules,
    mix_in_place,
    saved_heads,
)
from bench.tasks import get_task
from hybridft.models import build_model, head_parameter_names

from .conftest import tiny_run


def _lora_pair(task: str, seed: int):
    """(θ_pre as a plain model, θ_fine as a PEFT model on a copy of it) in float64, with a random non-zero ΔW and
    a trained-looking head copy (the adapter's B starts at zero, so it is drawn here)."""
    pre = build_model("tiny-bert", get_task(task), seed).double()
    config = get_method("hybrid_lora").make_config()
    fine = config.wrap(copy.deepcopy(pre), get_task(task).kind, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for module in lora_modules(fine):
            for part in (module.lora_A["default"], module.lora_B["default"]):
                part.weight.copy_(torch.randn(part.weight.shape, generator=gen, dtype=torch.float64))
        for wrapper in saved_heads(fine):
            for param in wrapper.modules_to_save["default"].parameters():
                param.add_(torch.randn(param.shape, generator=gen, dtype=torch.float64))
    return pre, fine


def _merged_state(peft_model) -> dict[str, torch.Tensor]:
    return copy.deepcopy(peft_model).merge_and_unload().state_dict()


@pytest.mark.parametrize("task", ["sst2", "conll2003", "squad_devsplit"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_the_mix_is_the_weight_interpolation_of_the_merged_models(task, alpha):
    pre, fine = _lora_pair(task, seed=7)
    merged_fine = _merged_state(fine)
    expected = {key: alpha * value + (1 - alpha) * merged_fine[key] if value.is_floating_point() else value
                for key, value in pre.state_dict().items()}  # fmt: skip
    mix_in_place(fine, alpha)
    got = _merged_state(fine)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == torch.float64
        torch.testing.assert_close(got[key], value, rtol=1e-12, atol=1e-12, msg=key)
    if alpha == 1.0:  # ΔW is gone and the head is θ_pre's: the mix is θ_pre
        for key, value in pre.state_dict().items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=1e-12, msg=key)


def test_the_adapter_disabled_teacher_is_the_pretrained_model_on_the_same_weights():
    pre, fine = _lora_pair("sst2", seed=3)
    teacher = AdapterDisabled(fine)
    batch = {"input_ids": torch.randint(1000, 2000, (5, 11)), "attention_mask": torch.ones(5, 11, dtype=torch.long)}
    batch["attention_mask"][1, 7:] = 0
    pre.eval(), fine.eval()
    with torch.no_grad():
        torch.testing.assert_close(teacher(**batch).logits, pre(**batch).logits, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(fine(**batch).logits, pre(**batch).logits)  # the adapter is back on afterwards
    shared = {id(p) for p in fine.parameters()}
    assert all(id(p) in shared for p in teacher.parameters())  # no second copy of any weight
    from hybridft.distill import weights_hash

    assert weights_hash(teacher) != weights_hash(fine)  # distinct teacher-logit cache keys


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sst2", "stsb"])
def test_hybrid_lora_trains_lora_and_head_on_the_shared_lp_stage(task, data_dir, stage_cache, tmp_path):
    results = {}
    for method in ("hybrid", "hybrid_lora", "lora_matched"):  # 2 epochs: whole-step rounding within ±3 %
        cfg = tiny_run(task, method, data_dir, epochs=2.0)
        results[method] = run_experiment(cfg, work_dir=tmp_path / method, cache_dir=stage_cache, progress=False)
    hybrid_lora = results["hybrid_lora"]
    assert hybrid_lora["status"] == "ok"
    assert [s["stage"] for s in hybrid_lora["stages"]] == ["lp", "lp_lora", "teacher_logits", "hybrid_lora"]
    assert hybrid_lora["stages"][0] == results["hybrid"]["stages"][0]  # the one LP stage, shared
    assert hybrid_lora["trainable_params"] < results["hybrid"]["trainable_params"] / 10
    ratio = results["lora_matched"]["train_flops"] / hybrid_lora["train_flops"]
    assert 0.9 <= ratio <= 1.1, ratio
    # a rerun loads the LoRA teacher and its logits: same cost recorded, same score
    again = run_experiment(tiny_run(task, "hybrid_lora", data_dir, epochs=2.0), work_dir=tmp_path / "again",
                           cache_dir=stage_cache, progress=False)  # fmt: skip
    assert again["stages"][:3] == hybrid_lora["stages"][:3]
    assert again["headline"] == pytest.approx(hybrid_lora["headline"], abs=1e-9)


def test_the_student_trains_only_lora_matrices_and_the_head(make_context):
    ctx, _ = make_context("sst2", "hybrid_lora", epochs=0.5)
    method = get_method("hybrid_lora")
    trained = method.train(ctx, method.make_config())
    names = [n for n, p in trained.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "modules_to_save" in n for n in names), names
    base = build_model("tiny-bert", get_task("sst2"), 3)
    head = set(head_parameter_names(base))
    frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
              for n, p in trained.model.named_parameters() if not p.requires_grad and "original_module" not in n}  # fmt: skip
    for name, param in base.named_parameters():  # the encoder is still the pretrained one
        if name not in head:
            torch.testing.assert_close(frozen[name], param, rtol=0, atol=0, msg=name)


def test_lora_matched_epochs_by_hand():
    model = get_method("lora").make_config().wrap(build_model("tiny-bert", get_task("sst2"), 0), "classification", 0)
    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    params = [(n, p) for n, p in model.named_parameters() if id(p) not in embeddings]
    p_fwd = sum(p.numel() for _, p in params)
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    first = next(i for i, (_, p) in enumerate(params) if p.requires_grad)
    p_grad = sum(p.numel() for _, p in params[first:])
    head = sum(p.numel() for n, p in params if "modules_to_save" in n)
    head_first = next(i for i, (n, _) in enumerate(params) if "modules_to_save" in n)
    f_lora = 2 * p_fwd + 2 * p_grad + 2 * trainable
    assert head and head_first >= 0
    # the probe's one forward pass + the LoRA teacher + θ_fine's teacher pass (θ_pre: the probe's rows) + student
    expected = (2 * p_fwd) / f_lora + 1.0 + 1 * (2 * p_fwd) / f_lora + 2.0
    config = LoraMatchedConfig(ft_epochs=1.0)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    assert lora_matched_epochs(model, config, run_epochs=2.0) == pytest.approx(expected)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before  # flags restored


@pytest.mark.parametrize(
    ("method", "field", "value"),
    [
        ("hybrid_lora", "alpha", 1.5),
        ("hybrid_lora", "alpha", "auto"),
        ("hybrid_lora", "r", 0),
        ("hybrid_lora", "lora_dropout", 1.0),
        ("hybrid_lora", "ft_learning_rate", 0.0),
        ("lora_matched", "teacher_passes", -1),
        ("lora_matched", "student_epochs", 0),
        ("lora_matched", "unlabeled_size", 0),
    ],
)
def test_bad_config_is_named(method, field, value):
    with pytest.raises(ValueError, match=field):
        get_method(method).make_config({field: value})


def test_causal_lm_is_refused_up_front():
    with pytest.raises(ValueError, match=r"hybrid_lora.*causal_lm"):
        get_method("hybrid_lora").check_task(get_task("sst2_lm"))
