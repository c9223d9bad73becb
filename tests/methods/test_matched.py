"""plain_matched: its FLOPs match the hybrid pipeline's (±10 %, measured), and its epoch formula by hand."""

from __future__ import annotations

import math

import pytest

from bench.experiment import run_experiment
from bench.methods import get_method
from bench.methods.matched import PlainMatchedConfig, matched_epochs, whole_steps
from bench.tasks import get_task
from hybridft.models import build_model, head_parameter_names

from .conftest import tiny_run


def test_matched_epochs_by_hand():
    model = build_model("tiny-bert", get_task("sst2"), seed=0)
    embeddings = sum(p.numel() for m in model.modules() if isinstance(m, __import__("torch").nn.Embedding)
                     for p in m.parameters())  # fmt: skip
    p = sum(x.numel() for x in model.parameters()) - embeddings
    assert head_parameter_names(model)
    # the probe's one forward pass + LP-FT + θ_fine's teacher pass (θ_pre's rows: the probe's matmul) + student
    expected = (2 * p) / (6 * p) + 1.0 + 1 * (2 * p) / (6 * p) + 2.0
    config = PlainMatchedConfig(ft_epochs=1.0, student_epochs=None)
    assert matched_epochs(model, config, run_epochs=2.0) == pytest.approx(expected)
    # with unlabelled inputs θ_pre runs over them too: two passes, over ratio × the tokens
    semi = PlainMatchedConfig(ft_epochs=1.0, unlabeled_split="train")
    assert matched_epochs(model, semi, run_epochs=2.0, ratio=1.5) == pytest.approx(
        (2 * p) / (6 * p) + 1.0 + 1.5 * (2 * (2 * p) / (6 * p) + 2.0)
    )
    assert all(x.requires_grad for x in model.parameters())  # flags restored


def test_whole_steps_rounds_to_the_trainers_step_count():
    epochs = whole_steps(3.001, n_features=32, batch_size=8)  # 4 steps per epoch → 12 steps, not 13
    assert math.ceil(epochs * 4) == 12
    assert math.ceil(whole_steps(0.01, 32, 8) * 4) == 1  # never zero steps


@pytest.mark.parametrize(("field", "value"), [("teacher_passes", -1), ("ft_epochs", 0), ("student_epochs", -2.0)])
def test_bad_config_is_named(field, value):
    with pytest.raises(ValueError, match=field):
        get_method("plain_matched").make_config({field: value})


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sst2", "conll2003"])
def test_measured_flops_match_the_hybrid_pipeline(task, data_dir, stage_cache, tmp_path):
    results = {}
    for method in ("plain", "plain_matched", "hybrid"):
        cfg = tiny_run(task, method, data_dir, epochs=1.0)
        results[method] = run_experiment(cfg, work_dir=tmp_path / method, cache_dir=stage_cache, progress=False)
    # the formula leaves out the probe's convex fit (0.2-3 % on MiniLM, a large share on this tiny model)
    hybrid = results["hybrid"]["train_flops"] - results["hybrid"]["probe"]["fit_flops"]
    ratio = results["plain_matched"]["train_flops"] / hybrid
    assert 0.9 <= ratio <= 1.1, ratio
    assert results["plain_matched"]["train_flops"] > 2 * results["plain"]["train_flops"]
    # the probe's pass over the features and θ_fine's teacher pass (θ_pre's rows are the probe's matmul)
    assert results["hybrid"]["forward_tokens"] == 2 * results["plain"]["train_tokens"]
    plain = results["plain"]
    assert plain["train_flops"] == pytest.approx(6 * plain["train_tokens"] * _non_embedding(task), rel=1e-9)


def _non_embedding(task):
    import torch

    model = build_model("tiny-bert", get_task(task), seed=0)
    emb = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())
    return sum(p.numel() for p in model.parameters()) - emb


@pytest.mark.slow
def test_with_unlabelled_inputs_the_match_counts_their_teacher_passes_and_student_tokens(data_dir, stage_cache,
                                                                                          tmp_path):  # fmt: skip
    """hybrid with 40 unlabelled inputs (other rows of the train split) and plain_matched sized after it."""
    unlabelled = (("unlabeled_size", 40), ("unlabeled_split", "train"))
    results = {}
    for method in ("plain", "plain_matched", "hybrid"):
        cfg = tiny_run("sst2", method, data_dir, epochs=1.0, method_args=() if method == "plain" else unlabelled)
        results[method] = run_experiment(cfg, work_dir=tmp_path / method, cache_dir=stage_cache, progress=False)
    hybrid = results["hybrid"]
    ratio = results["plain_matched"]["train_flops"] / (hybrid["train_flops"] - hybrid["probe"]["fit_flops"])
    assert 0.9 <= ratio <= 1.1, ratio
    assert hybrid["method_extra"]["unlabeled"]["split"] == "train[rest]"
    assert hybrid["method_extra"]["unlabeled"]["size"] == 40
    assert hybrid["forward_tokens"] > 2 * results["plain"]["train_tokens"]  # the teachers also ran on the 40
    assert results["plain_matched"]["train_tokens"] > 4 * results["plain"]["train_tokens"]


def test_training_rest_is_the_train_split_outside_the_subset_and_the_dev_split(data_dir):
    from bench.data import subset
    from bench.splits import split_dev, training_rest

    task = get_task("sst2")
    cfg = tiny_run("sst2", "hybrid", data_dir, train_size=300, dev_size=100)
    full = task.load("train", data_dir)
    pool, dev, _ = split_dev(full, 100, cfg.seed, task="sst2", split="train")
    train, _ = subset(pool, 300, cfg.seed, task="sst2", split="train")
    rest = training_rest(cfg, task)
    ids = [set(d["idx"]) for d in (train, dev, rest)]
    assert len(rest) == len(full) - 400
    assert not (ids[0] & ids[2]) and not (ids[1] & ids[2]) and len(ids[0] | ids[1] | ids[2]) == len(full)
    with pytest.raises(ValueError, match="leave no other training rows"):
        training_rest(tiny_run("sst2", "hybrid", data_dir, train_size=len(full), dev_size=None), task)
