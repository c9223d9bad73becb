"""The method registry and the method configs: names, paper defaults, validation, overrides."""

from __future__ import annotations

import dataclasses

import pytest

from bench.methods import get_method, method_names

ALL = ["plain", "plain_matched", "adapter", "lora", "lora_paper", "lp", "lp_ft", "wise_ft", "hybrid", "kd_pre",
       "kd_fine", "hybrid_output", "zero_shot", "hybrid_lora", "lora_matched", "plain_multitask", "hybrid_multitask"]  # fmt: skip


def test_every_method_is_registered_once():
    assert sorted(method_names()) == sorted(ALL)
    assert len(set(method_names())) == len(method_names())


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown method 'qlora'.*plain.*hybrid_output"):
        get_method("qlora")


@pytest.mark.parametrize("name", ALL)
def test_default_configs_are_frozen_and_valid(name):
    config = get_method(name).make_config()
    assert dataclasses.is_dataclass(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.learning_rate = 1.0


def test_paper_defaults():
    plain = get_method("plain").make_config()
    lora = get_method("lora").make_config()
    adapter = get_method("adapter").make_config()
    hybrid = get_method("hybrid").make_config()
    assert (lora.r, lora.modules_for("classification")) == (8, ("query", "value"))
    assert lora.modules_for("causal_lm")[:4] == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert lora.learning_rate > plain.learning_rate
    assert (adapter.architecture, adapter.reduction_factor) == ("seq_bn", 16)
    assert (hybrid.alpha, hybrid.beta, hybrid.gamma) == (0.5, 1.0, 1.0)
    assert get_method("kd_pre").make_config().gamma == 0
    assert get_method("kd_fine").make_config().beta == 0


def test_learning_rate_sets_the_methods_own_stage():
    assert get_method("plain").make_config(learning_rate=3e-5).learning_rate == 3e-5
    with pytest.raises(ValueError, match=r"method 'lp' takes no learning rate.*convex solver"):
        get_method("lp").make_config(learning_rate=5e-3)  # the probe is a convex fit: nothing for it to set
    lp_ft = get_method("lp_ft").make_config(learning_rate=1e-5)
    assert lp_ft.ft_learning_rate == 1e-5
    hybrid = get_method("hybrid").make_config({"beta": 0.5}, learning_rate=4e-5)
    assert (hybrid.learning_rate, hybrid.beta) == (4e-5, 0.5)


def test_override_errors_name_the_field():
    with pytest.raises(ValueError, match=r"has no field 'rank'; known fields:.*\br\b"):
        get_method("lora").make_config({"rank": 4})
    with pytest.raises(ValueError, match="conflicts with method_args learning_rate"):
        get_method("plain").make_config({"learning_rate": 1e-5}, learning_rate=2e-5)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("plain", {"learning_rate": 0.0}, "learning_rate must be a positive"),
        ("plain", {"warmup_ratio": 1.0}, "warmup_ratio must be in"),
        ("adapter", {"architecture": "prefix"}, "architecture must be one of"),
        ("adapter", {"reduction_factor": 0}, "reduction_factor must be"),
        ("lora", {"r": 0}, "r must be an integer"),
        ("lora", {"lora_dropout": 1.0}, "lora_dropout must be in"),
        ("lora", {"target_modules": ()}, "target_modules must be"),
        ("wise_ft", {"alpha": 1.5}, "alpha must be in"),
        ("hybrid", {"temperature": 0.0}, "temperature must be > 0"),
        ("hybrid", {"beta": -1.0}, "beta must be >= 0"),
        ("hybrid", {"loss_backend": "cuda"}, "loss_backend must be one of"),
        ("hybrid", {"lp_epochs": 0}, "lp_epochs was removed"),
        ("kd_pre", {"gamma": 0.5}, "gamma must be 0"),
        ("kd_fine", {"beta": 0.5}, "beta must be 0"),
    ],
)
def test_invalid_configs_are_rejected(name, args, message):
    with pytest.raises(ValueError, match=message):
        get_method(name).make_config(args)


def test_list_overrides_become_tuples():
    assert get_method("lora").make_config({"target_modules": ["query", "key"]}).target_modules == ("query", "key")


def test_adapter_is_refused_before_training_where_adapters_does_not_import(monkeypatch):
    """`adapters` is an optional extra (it does not import on transformers 5): without it the bench's adapter runs
    are refused at `check_run`, before any training, naming the extra and the transformers version it needs."""
    import sys

    from bench.tasks import get_task

    method = get_method("adapter")
    config = method.make_config()
    monkeypatch.setitem(sys.modules, "adapters", None)
    with pytest.raises(ImportError, match=r"hybridft\[adapters\].*transformers < 5; this environment has transformers"):
        method.check_run(get_task("sst2"), config)
