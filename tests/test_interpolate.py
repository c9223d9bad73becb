"""WiSE-FT interpolation: exact endpoints, the formula against a float64 reference, and every rejected input."""

from __future__ import annotations

import pytest
import torch

from hybridft.interpolate import check_alpha, interpolate_models, interpolate_state_dicts


def _state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "encoder.weight": torch.randn(7, 5, generator=generator),
        "encoder.bias": torch.randn(5, generator=generator),
        "head.weight": torch.randn(3, 7, generator=generator).to(torch.bfloat16),
        "position_ids": torch.arange(9),
    }


@pytest.fixture
def pair(seed):
    generator = torch.Generator().manual_seed(seed)
    return _state(generator), _state(generator)


def test_endpoints_are_exact(pair):
    pre, fine = pair
    at_zero = interpolate_state_dicts(pre, fine, 0.0)
    at_one = interpolate_state_dicts(pre, fine, 1.0)
    for key in pre:
        assert torch.equal(at_zero[key], fine[key]), key
        assert torch.equal(at_one[key], pre[key]), key
        assert at_zero[key].dtype == fine[key].dtype


@pytest.mark.parametrize("alpha", [0.1, 0.37, 0.5, 0.9])
def test_matches_float64_reference(pair, alpha):
    pre, fine = pair
    mixed = interpolate_state_dicts(pre, fine, alpha)
    for key in ("encoder.weight", "encoder.bias"):
        expected = alpha * pre[key].double() + (1 - alpha) * fine[key].double()
        torch.testing.assert_close(mixed[key].double(), expected, atol=1e-6, rtol=1e-6)
    expected = (alpha * pre["head.weight"].double() + (1 - alpha) * fine["head.weight"].double()).to(torch.bfloat16)
    torch.testing.assert_close(mixed["head.weight"], expected, atol=0, rtol=0)
    assert torch.equal(mixed["position_ids"], pre["position_ids"])


def test_inputs_are_not_modified(pair):
    pre, fine = pair
    before = {k: v.clone() for k, v in pre.items()}
    interpolate_state_dicts(pre, fine, 0.3)
    assert all(torch.equal(before[k], pre[k]) for k in pre)


@pytest.mark.parametrize("alpha", [-0.01, 1.01, float("nan"), float("inf")])
def test_rejects_alpha_outside_unit_interval(pair, alpha):
    with pytest.raises(ValueError, match="alpha must be in"):
        interpolate_state_dicts(*pair, alpha)


@pytest.mark.parametrize("alpha", [True, "0.5", None])
def test_rejects_non_numeric_alpha(alpha):
    with pytest.raises(TypeError, match="alpha must be a number"):
        check_alpha(alpha)


def test_names_missing_and_extra_keys(pair):
    pre, fine = pair
    fine = dict(fine)
    del fine["encoder.bias"]
    with pytest.raises(ValueError, match=r"'encoder\.bias' is in pre but not in fine"):
        interpolate_state_dicts(pre, fine, 0.5)
    with pytest.raises(ValueError, match=r"'encoder\.bias' is in fine but not in pre"):
        interpolate_state_dicts(fine, pre, 0.5)


def test_names_first_shape_mismatch(pair):
    pre, fine = pair
    fine = {**fine, "encoder.bias": torch.randn(6)}
    with pytest.raises(ValueError, match=r"'encoder.bias': shape \(5,\) vs \(6,\)"):
        interpolate_state_dicts(pre, fine, 0.5)


def test_rejects_dtype_mismatch_and_differing_integer_buffers(pair):
    pre, fine = pair
    with pytest.raises(ValueError, match=r"'encoder\.bias': dtype"):
        interpolate_state_dicts(pre, {**fine, "encoder.bias": fine["encoder.bias"].double()}, 0.5)
    with pytest.raises(ValueError, match="non-floating tensor 'position_ids'"):
        interpolate_state_dicts(pre, {**fine, "position_ids": torch.arange(1, 10)}, 0.5)


def _tiny_bert(seed: int):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3
    )
    return BertForSequenceClassification(config).eval()


def test_models_reproduce_each_endpoints_outputs_exactly(seed):
    pre, fine = _tiny_bert(seed), _tiny_bert(seed + 1)
    inputs = {"input_ids": torch.randint(0, 120, (4, 11)), "attention_mask": torch.ones(4, 11, dtype=torch.long)}
    with torch.no_grad():
        out_pre, out_fine = pre(**inputs).logits, fine(**inputs).logits
        at_one = interpolate_models(pre, fine, 1.0).eval()(**inputs).logits
        at_zero = interpolate_models(pre, fine, 0.0).eval()(**inputs).logits
        halfway = interpolate_models(pre, fine, 0.5).eval()(**inputs).logits
    assert torch.equal(at_one, out_pre)
    assert torch.equal(at_zero, out_fine)
    assert not torch.allclose(halfway, out_pre) and not torch.allclose(halfway, out_fine)


# Per-key α (per-layer mixes, `hybridft.layer_alpha`)


def _per_key(pre, generator) -> dict[str, float]:
    return {key: float(torch.rand((), generator=generator)) for key in pre}


def test_per_key_alpha_matches_float64_reference(pair, seed):
    pre, fine = pair
    alphas = _per_key(pre, torch.Generator().manual_seed(seed + 1))
    mixed = interpolate_state_dicts(pre, fine, alphas)
    for key in ("encoder.weight", "encoder.bias"):
        a = alphas[key]
        expected = a * pre[key].double() + (1 - a) * fine[key].double()
        torch.testing.assert_close(mixed[key].double(), expected, atol=1e-6, rtol=1e-6)
    a = alphas["head.weight"]
    expected = (a * pre["head.weight"].double() + (1 - a) * fine["head.weight"].double()).to(torch.bfloat16)
    torch.testing.assert_close(mixed["head.weight"], expected, atol=0, rtol=0)
    assert torch.equal(mixed["position_ids"], pre["position_ids"])


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_constant_per_key_alpha_is_the_float_mix_bit_for_bit(pair, alpha):
    pre, fine = pair
    by_key = interpolate_state_dicts(pre, fine, dict.fromkeys(pre, alpha))
    by_float = interpolate_state_dicts(pre, fine, alpha)
    assert all(torch.equal(by_key[k], by_float[k]) for k in pre)


def test_per_key_alpha_names_missing_unknown_and_bad_keys(pair):
    pre, fine = pair
    alphas = dict.fromkeys(pre, 0.5)
    with pytest.raises(ValueError, match=r"no value for key 'encoder\.bias'"):
        interpolate_state_dicts(pre, fine, {k: v for k, v in alphas.items() if k != "encoder.bias"})
    with pytest.raises(ValueError, match=r"names key 'decoder\.weight', which is not in the state dicts"):
        interpolate_state_dicts(pre, fine, {**alphas, "decoder.weight": 0.5})
    with pytest.raises(ValueError, match=r"at 'head\.weight': alpha must be in \[0, 1\]"):
        interpolate_state_dicts(pre, fine, {**alphas, "head.weight": 1.5})
    with pytest.raises(TypeError, match=r"at 'encoder\.weight': alpha must be a number"):
        interpolate_state_dicts(pre, fine, {**alphas, "encoder.weight": "0.5"})


def test_models_take_a_per_key_alpha(seed):
    pre, fine = _tiny_bert(seed), _tiny_bert(seed + 1)
    alphas = {k: (1.0 if k.startswith("bert.embeddings.") else 0.0) for k in pre.state_dict()}
    mixed = interpolate_models(pre, fine, alphas).state_dict()
    for key, value in mixed.items():
        assert torch.equal(value, (pre if alphas[key] == 1.0 else fine).state_dict()[key]), key
