"""RunConfig: validation, hashing, serialisation (no training here; runs are tested in tests/methods/)."""

from __future__ import annotations

import json

import pytest

from hybridft.experiment import DEFAULT_ALPHAS, RunConfig, qa_stride


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
    ],
)
def test_bad_fields_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        _cfg(**change)


def test_sweep_grid_and_qa_stride():
    assert DEFAULT_ALPHAS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert qa_stride(128) == 64 and qa_stride(64) == 32 and qa_stride(384) == 64
