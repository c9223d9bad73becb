"""Choosing the hybrid method's α: a number, "auto" (dev-split grid), a per-layer list, "adamerging" (entropy)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.experiment import DEFAULT_ALPHAS, run_experiment
from bench.methods import get_method

from .conftest import tiny_run


def _stage_names(fits) -> list[str]:
    return [f.stage for f in fits]


def _non_embedding_parameters(model) -> int:
    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


# ---------------------------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ({"alpha": 1.5}, ValueError, r"HybridConfig\.alpha must be in \[0, 1\].*got 1\.5"),
        ({"alpha": "autox"}, ValueError, r"HybridConfig\.alpha must be a number in \[0, 1\], 'auto', 'adamerging'"),
        ({"alpha": []}, ValueError, r"HybridConfig\.alpha as a per-layer list needs at least 2 values.*got \[\]"),
        ({"alpha": [0.2]}, ValueError, r"HybridConfig\.alpha as a per-layer list needs at least 2 values"),
        ({"alpha": [0.1, 2]}, ValueError, r"HybridConfig\.alpha\[1\] must be in \[0, 1\].*got 2"),
        ({"alpha": [0.1, "x"]}, TypeError, r"HybridConfig\.alpha\[1\] must be a number"),
        ({"alpha": None}, TypeError, r"HybridConfig\.alpha must be a number in \[0, 1\]"),
        ({"adamerging_steps": 0}, ValueError, r"HybridConfig\.adamerging_steps must be an integer >= 1, got 0"),
        ({"adamerging_steps": 2.5}, ValueError, r"adamerging_steps must be an integer >= 1"),
        ({"adamerging_lr": 0.0}, ValueError, r"HybridConfig\.adamerging_lr must be a positive finite number"),
    ],
)
def test_bad_arguments_name_the_field_and_what_was_expected(args, error, match):
    with pytest.raises(error, match=match):
        get_method("hybrid").make_config(args)


def test_choices_are_accepted_and_a_list_becomes_a_hashable_tuple():
    hybrid = get_method("hybrid")
    assert hybrid.make_config({"alpha": 0.25}).alpha == 0.25
    assert hybrid.make_config({"alpha": "auto"}).alpha == "auto"
    config = hybrid.make_config({"alpha": [0, 0.5, 1], "adamerging_steps": 7})
    assert config.alpha == (0.0, 0.5, 1.0) and isinstance(config.alpha, tuple)
    hash(config)
    assert get_method("kd_pre").make_config({"alpha": [0.3, 0.7]}).alpha == (0.3, 0.7)
    assert get_method("kd_fine").make_config({"alpha": "adamerging"}).alpha == "adamerging"
    assert get_method("hybrid_output").make_config({"alpha": "auto"}).alpha == "auto"


@pytest.mark.parametrize("alpha", [[0.2, 0.8], "adamerging"])
def test_hybrid_output_takes_a_number_or_auto_only(alpha):
    with pytest.raises(ValueError, match=r"hybrid_output mixes outputs.*must be a number in \[0, 1\] or 'auto'"):
        get_method("hybrid_output").make_config({"alpha": alpha})


@pytest.mark.parametrize("alpha", ["auto", [0.1, 0.9]])
def test_the_trainer_arguments_stay_float_only(alpha, tmp_path):
    from hybridft.trainer_config import HybridTrainingArguments

    with pytest.raises(TypeError, match=r"HybridTrainingArguments\.alpha must be a number in \[0, 1\]"):
        HybridTrainingArguments(output_dir=str(tmp_path), alpha=alpha)


@pytest.mark.parametrize("alpha", ["auto", "adamerging", [0.0, 1.0]])
def test_causal_lm_refuses_anything_but_a_number_before_training(alpha):
    hybrid = get_method("hybrid")
    ctx = SimpleNamespace(task=SimpleNamespace(kind="causal_lm", name="gsm8k"), run=SimpleNamespace(dev_size=8))
    with pytest.raises(ValueError, match=r"causal LM\) takes alpha as a number in \[0, 1\]"):
        hybrid.train(ctx, hybrid.make_config({"alpha": alpha}))


def test_auto_without_a_dev_split_names_dev_size(make_context):
    ctx, _ = make_context("sst2", "hybrid")
    hybrid = get_method("hybrid")
    with pytest.raises(ValueError, match=r"alpha='auto'.*set dev_size"):
        hybrid.train(ctx, hybrid.make_config({"alpha": "auto"}))


def test_adamerging_refuses_regression_naming_the_kind(make_context):
    ctx, _ = make_context("stsb", "hybrid")
    hybrid = get_method("hybrid")
    with pytest.raises(ValueError, match=r"alpha='adamerging'.*not to task 'stsb' of kind 'regression'"):
        hybrid.train(ctx, hybrid.make_config({"alpha": "adamerging"}))


# ---------------------------------------------------------------------------------------------------------------
# Per-layer α


def _hand_groups(names: list[str]) -> dict[str, int]:
    """tiny-bert (2 layers) by hand: embeddings 0, layer i → i+1, pooler and classifier 3."""
    out = {}
    for name in names:
        if name.startswith("bert.embeddings."):
            out[name] = 0
        elif name.startswith("bert.encoder.layer.0."):
            out[name] = 1
        elif name.startswith("bert.encoder.layer.1."):
            out[name] = 2
        else:
            assert name.startswith(("bert.pooler.", "classifier.")), name
            out[name] = 3
    return out


@pytest.mark.parametrize("values", [(0.2, 0.9), (0.0, 0.7, 0.1, 0.4, 1.0)])
def test_layer_alphas_match_a_hand_computation_on_tiny_bert(values, make_context):
    from hybridft.layer_alpha import layer_alphas, layer_groups

    ctx, _ = make_context("sst2")
    model = ctx.build_model()
    names = list(model.state_dict())
    groups = layer_groups(model)
    assert groups.num_layers == 2 and groups.count == 4
    assert groups.of == _hand_groups(names)
    alphas = layer_alphas(model, values)
    assert set(alphas) == set(names)
    anchors = np.linspace(0.0, 1.0, len(values))  # mergekit's gradient: the list spread evenly over the depth
    expected = {g: float(np.interp(g / 3, anchors, values)) for g in range(4)}
    for name, group in _hand_groups(names).items():
        assert alphas[name] == pytest.approx(expected[group], abs=1e-12), name
    assert alphas["bert.embeddings.word_embeddings.weight"] == values[0]  # exact at the ends
    assert alphas["classifier.weight"] == values[-1]


@pytest.mark.parametrize("values", [(0.0, 0.0), (1.0, 1.0, 1.0, 1.0, 1.0)])
def test_constant_layer_lists_give_the_endpoints_exactly(values, make_context):
    from hybridft.interpolate import interpolate_models
    from hybridft.layer_alpha import layer_alphas

    ctx, _ = make_context("conll2003")
    pre, fine = ctx.build_model(), ctx.build_model()
    with torch.no_grad():
        for param in fine.parameters():
            param.add_(torch.randn_like(param))
    mixed = interpolate_models(pre, fine, layer_alphas(fine, values)).state_dict()
    target = (pre if values[0] == 1.0 else fine).state_dict()
    assert all(torch.equal(mixed[k], target[k]) for k in target)


def test_layer_list_run_records_its_groups_and_adds_no_stage(make_context):
    ctx, _ = make_context("sst2", "kd_pre", epochs=0.4)
    kd_pre = get_method("kd_pre")
    trained = kd_pre.train(ctx, kd_pre.make_config({"alpha": [0.2, 0.8]}))
    assert _stage_names(trained.fits) == ["lp", "lp_ft", "teacher_logits", "kd_pre"]
    record = trained.extra["alpha"]
    assert record["mode"] == "layers" and record["values"] == [0.2, 0.8]
    assert record["per_group"] == pytest.approx([0.2, 0.4, 0.6, 0.8])


# ---------------------------------------------------------------------------------------------------------------
# A number: unchanged


def test_a_number_keeps_the_stages_and_records_of_before(make_context, stage_cache):
    ctx, _ = make_context("sst2", "lp_ft", epochs=0.4)
    lp_ft = get_method("lp_ft").train(ctx, get_method("lp_ft").make_config())
    before = sorted(p.name for p in (stage_cache / "stages").iterdir())
    ctx, _ = make_context("sst2", "hybrid", epochs=0.4)
    hybrid = get_method("hybrid")
    trained = hybrid.train(ctx, hybrid.make_config({"alpha": 0.3}))
    assert sorted(p.name for p in (stage_cache / "stages").iterdir()) == before  # the same LP and LP-FT keys
    assert _stage_names(trained.fits) == ["lp", "lp_ft", "teacher_logits", "hybrid"]
    assert trained.fits[:2] == lp_ft.fits
    assert trained.extra == {}


# ---------------------------------------------------------------------------------------------------------------
# "auto"


def _dev_tokens(cfg) -> int:
    from bench.experiment import qa_stride, split_dev
    from bench.tasks import get_task
    from hybridft.models import load_tokenizer

    task = get_task(cfg.task)
    _, dev, _ = split_dev(task.load(task.train_split, cfg.data_dir), cfg.dev_size, cfg.seed, task=task.name,
                          split=task.train_split)  # fmt: skip
    assert len(dev) == cfg.dev_size
    features = task.preprocess(dev, load_tokenizer(cfg.model, task), max_length=cfg.max_length, train=False,
                               stride=qa_stride(cfg.max_length))  # fmt: skip
    return sum(sum(mask) for mask in features["attention_mask"])


def _check_pick(record):
    grid = record["grid"]
    assert [a for a, _ in grid] == list(DEFAULT_ALPHAS)
    best = max(s for _, s in grid if math.isfinite(s))
    tied = [a for a, s in grid if s == best]
    assert record["chosen"] == min(tied, key=lambda a: (round(abs(a - 0.5), 9), a))


def test_auto_picks_the_best_dev_alpha_and_counts_its_passes(data_dir, tmp_path, make_context):
    from bench.tasks import get_task
    from hybridft.models import build_model

    cache = tmp_path / "cache"
    two_p = 2 * _non_embedding_parameters(build_model("tiny-bert", get_task("sst2"), 3))
    for method, models in (("hybrid", 1), ("hybrid_output", 2)):  # an output mix runs both teachers
        cfg = tiny_run("sst2", method, data_dir, dev_size=16, method_args=(("alpha", "auto"),), shifts=())
        result = run_experiment(cfg, work_dir=tmp_path / method, cache_dir=cache, progress=False)
        assert result["status"] == "ok"
        assert [s["stage"] for s in result["stages"]] == ["lp", "lp_ft", "teacher_logits", "alpha_search", method]
        record = result["method_extra"]["alpha"]
        assert record["mode"] == "auto" and record["metric"] == "accuracy" and record["dev_size"] == 16
        _check_pick(record)
        search = result["stages"][3]
        tokens = _dev_tokens(cfg)
        assert search["forward_tokens"] == 11 * tokens and search["tokens"] == 0
        assert search["flops"] == 11 * tokens * two_p * models
        assert search["train_time_s"] > 0 and search["samples"] == 11 * 16


def test_auto_ties_go_to_the_alpha_nearest_one_half_then_the_smaller():
    from hybridft.alpha_search import pick

    assert pick([(0.0, 1.0), (0.3, 2.0), (0.9, 2.0)]) == 0.3
    assert pick([(0.4, 2.0), (0.6, 2.0), (1.0, 2.0)]) == 0.4
    assert pick([(0.4, 1.0), (0.5, 1.0), (0.6, 3.0)]) == 0.6
    assert pick([(0.1, float("nan")), (0.2, 0.0)]) == 0.2
    assert pick([(0.0, float("nan")), (0.5, float("nan")), (1.0, float("nan"))]) == 0.5


# ---------------------------------------------------------------------------------------------------------------
# "adamerging"


@pytest.mark.parametrize(("task", "kind"), [("sst2", "classification"), ("conll2003", "token")])
def test_adamerging_lowers_the_entropy_within_bounds_reproducibly(task, kind, make_context):
    """A θ_pre with a flat head (its logits ×0.01) and θ_fine's head kept sharp give the entropy somewhere to go:
    toward θ_fine's head. (The convex probe's θ_pre is itself confident, so its head is flattened here.)"""
    import copy

    from hybridft.adamerging import adamerge
    from hybridft.methods.stages import teachers

    ctx, _ = make_context(task, "hybrid")
    pair = teachers(ctx, get_method("hybrid").make_config())
    pre, fine = copy.deepcopy(pair.pre), copy.deepcopy(pair.fine)
    with torch.no_grad():
        pre.classifier.weight.mul_(0.01)
        pre.classifier.bias.mul_(0.01)
        scale = (30.0 if kind == "classification" else 3.0) / float(fine.classifier.weight.abs().max())
        fine.classifier.weight.mul_(scale)
        fine.classifier.bias.mul_(scale)
    before = {k: v.clone() for k, v in fine.state_dict().items()}

    def run(seed, steps=20):
        return adamerge(pre, fine, ctx.train_features, ctx.collator(), kind=kind, steps=steps, lr=0.05,
                        batch_size=8, seed=seed)  # fmt: skip

    first, second = run(3), run(3)
    assert first.entropy_end < first.entropy_start - 0.01
    assert len(first.per_group) == 4 and all(0.0 <= a <= 1.0 for a in first.per_group)
    assert first.per_group[-1] < 0.5  # the head moved toward the sharp one
    assert first.per_group == second.per_group and first.fit.curve == second.fit.curve  # same seed, same run
    assert first.entropy_end == second.entropy_end
    assert all(torch.equal(v, fine.state_dict()[k]) for k, v in before.items())  # the teachers are untouched
    fit = first.fit
    assert (fit.stage, fit.optimizer_steps, fit.samples) == ("adamerging", 20, 20 * 8)
    p = _non_embedding_parameters(fine)
    assert fit.tokens > 0 and fit.forward_tokens > 0
    assert fit.flops == fit.tokens * 6 * p + fit.forward_tokens * 2 * p
    assert [step for step, _ in fit.curve] == list(range(1, 21))
    assert run(4, steps=3).fit.curve != run(3, steps=3).fit.curve  # the seed draws the batches


def test_adamerging_run_records_its_stage_and_starts_the_student_from_the_learned_mix(make_context):
    from hybridft.methods.stages import teachers

    ctx, _ = make_context("sst2", "hybrid", epochs=0.4)
    hybrid = get_method("hybrid")
    config = hybrid.make_config({"alpha": "adamerging", "adamerging_steps": 6, "adamerging_lr": 0.05})
    trained = hybrid.train(ctx, config)
    assert _stage_names(trained.fits) == ["lp", "lp_ft", "teacher_logits", "adamerging", "hybrid"]
    record = trained.extra["alpha"]
    assert record["mode"] == "adamerging" and (record["steps"], record["lr"]) == (6, 0.05)
    assert len(record["per_group"]) == 4 and all(0.0 <= a <= 1.0 for a in record["per_group"])
    assert math.isfinite(record["entropy_start"]) and math.isfinite(record["entropy_end"])
    assert trained.fits[3].optimizer_steps == 6 and not trained.diverged
    pair = teachers(ctx, config)  # from the cache
    alphas, fits, again = hybrid.choose_alpha(ctx, pair, config)
    assert again["per_group"] == record["per_group"] and _stage_names(fits) == ["adamerging"]
    student = hybrid.initial_student(pair, config, alphas).state_dict()
    pre, fine = pair.pre.state_dict(), pair.fine.state_dict()
    for name, group in (("bert.embeddings.word_embeddings.weight", 0), ("bert.encoder.layer.1.output.dense.weight", 2),
                        ("classifier.weight", 3)):  # fmt: skip
        a = record["per_group"][group]
        torch.testing.assert_close(student[name], a * pre[name] + (1 - a) * fine[name])
