"""RunConfig: validation, hashing, serialisation (no training here; runs are tested in tests/methods/)."""

from __future__ import annotations

import json

import pytest

from bench.experiment import DEFAULT_ALPHAS, RunConfig, qa_stride


def _cfg(**kw):
    return RunConfig(**{"task": "sst2", "method": "plain", "seed": 0, "model": "tiny-bert", **kw})


def test_hash_ignores_data_dir_and_sees_everything_else():
    base = _cfg()
    assert base.config_hash() == _cfg(data_dir="/elsewhere").config_hash()
    assert len(base.config_hash()) == 16
    for change in (
        {"seed": 1},
        {"epochs": 2.0},
        {"learning_rate": 1e-4},
        {"method_args": (("r", 4),)},
        {"train_size": 10},
        {"model": "minilm"},
    ):
        assert _cfg(**change).config_hash() != base.config_hash(), change


def test_to_dict_is_json_and_method_args_dict_is_normalised():
    cfg = _cfg(method_args={"r": 4, "lora_alpha": 8})
    assert cfg.method_args == (("lora_alpha", 8), ("r", 4))
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["method_args"] == [["lora_alpha", 8], ["r", 4]]
    assert _cfg(method_args=(("lora_alpha", 8), ("r", 4))).config_hash() == cfg.config_hash()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": ""}, "task must be a non-empty"),
        ({"train_size": 0}, "train_size must be None or an integer"),
        ({"batch_size": 0}, "batch_size must be an integer"),
        ({"epochs": 0}, "epochs must be > 0"),
        ({"learning_rate": -1.0}, "learning_rate must be None or a positive"),
        ({"batching": "sorted"}, "batching must be one of"),
        ({"dev_size": 0}, "dev_size must be None or an integer"),
        ({"eval_on": "test"}, "eval_on must be one of"),
        ({"eval_on": "dev"}, "needs a dev split"),
    ],
)
def test_bad_fields_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        _cfg(**change)


def test_sweep_grid_and_qa_stride():
    assert DEFAULT_ALPHAS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert qa_stride(128) == 64 and qa_stride(64) == 32 and qa_stride(384) == 128  # run_qa: 128 at 384


def _real(data_dir, **kw):
    fields = dict(task="sst2", method="plain", seed=4, model="tiny-bert", train_size=40, eval_size=16, max_length=32,
                  dev_size=30, data_dir=str(data_dir))  # fmt: skip
    return RunConfig(**{**fields, **kw})


def test_dev_split_is_seeded_disjoint_shared_and_recorded(data_dir):
    from bench.experiment import prepare_data

    a, b = prepare_data(_real(data_dir)), prepare_data(_real(data_dir, method="lora", train_size=80))
    assert a.subsets["dev"] == b.subsets["dev"]  # the same dev split for every method (and train size) of a seed
    assert a.subsets["dev"]["size"] == 30 and a.subsets["dev"]["split"] == "train[dev]"
    other_seed = prepare_data(_real(data_dir, seed=5))
    assert other_seed.subsets["dev"]["fingerprint"] != a.subsets["dev"]["fingerprint"]
    dev = prepare_data(_real(data_dir, eval_on="dev", eval_size=None))
    dev_sentences = set(dev.eval_examples["sentence"])
    for data in (a, b):
        train_ids = {tuple(ids) for ids in data.train_features["input_ids"]}
        dev_ids = {tuple(ids) for ids in dev.eval_features["input_ids"]}
        assert not train_ids & dev_ids
    assert len(dev_sentences) == 30 and dev.subsets["eval"]["split"] == "dev"
    with pytest.raises(ValueError, match="leaves no training rows"):
        prepare_data(_real(data_dir, dev_size=10**6))


def test_extra_eval_splits_are_scored(data_dir, tmp_path, monkeypatch):
    """MNLI's mismatched split is not offline; MRPC's labelled test split stands in for an extra split."""
    import dataclasses

    import bench.experiment as experiment
    from bench import tasks
    from bench.experiment import run_experiment

    mrpc = dataclasses.replace(tasks.get_task("mrpc"), extra_eval_splits=("test",))
    registered = tasks.get_task
    monkeypatch.setattr(experiment, "get_task", lambda name: mrpc if name == "mrpc" else registered(name))
    cfg = _real(data_dir, task="mrpc", train_size=16, dev_size=None, epochs=0.5)
    result = run_experiment(cfg, work_dir=tmp_path / "w", cache_dir=tmp_path / "c", progress=False)
    assert set(result["extra_metrics"]) == {"test"} and "accuracy" in result["extra_metrics"]["test"]
    assert result["subsets"]["test"]["size"] == 16
