"""WiSE-FT weight interpolation (Wortsman et al. 2022): θ_mix = α·θ_pre + (1−α)·θ_fine over every parameter.

α is one number for every tensor, or a mapping from each state-dict name to its own number (per-layer α,
`hybridft.layer_alpha.layer_alphas`); the mapping must name every key of the state dicts and no other. The formula
is evaluated as written, so the endpoints are exact for finite weights: at α = 0 every entry is 0·pre + 1·fine =
fine, at α = 1 it is 1·pre + 0·fine = pre (no lerp rounding). Non-floating tensors (integer buffers such as BERT's
``position_ids``) cannot be interpolated and must be equal in both endpoints.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a number in [0, 1], got {type(alpha).__name__}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (1 = the pretrained teacher, 0 = the fine-tuned one), got {alpha}")
    return float(alpha)


def check_alpha_map(alpha: Mapping[str, float], keys) -> dict[str, float]:
    """A per-key α as a dict of floats, or ValueError/TypeError naming the first key without a value, the first
    value for a key the state dicts do not have, or the first value outside [0, 1]."""
    keys = list(keys)
    missing = [k for k in keys if k not in alpha]
    if missing:
        raise ValueError(
            f"per-key alpha has no value for key {missing[0]!r} ({len(missing)} such): it must give every key its α"
        )
    known = set(keys)
    unknown = [k for k in alpha if k not in known]
    if unknown:
        raise ValueError(
            f"per-key alpha names key {unknown[0]!r}, which is not in the state dicts ({len(unknown)} such)"
        )
    out = {}
    for key in keys:
        try:
            out[key] = check_alpha(alpha[key])
        except (TypeError, ValueError) as err:
            raise type(err)(f"per-key alpha at {key!r}: {err}") from None
    return out


def check_compatible(pre: Mapping[str, torch.Tensor], fine: Mapping[str, torch.Tensor]) -> None:
    """Raise ValueError naming the first key or shape that differs between two state dicts."""
    missing = [k for k in pre if k not in fine]
    if missing:
        raise ValueError(f"state dicts differ: key {missing[0]!r} is in pre but not in fine ({len(missing)} such)")
    extra = [k for k in fine if k not in pre]
    if extra:
        raise ValueError(f"state dicts differ: key {extra[0]!r} is in fine but not in pre ({len(extra)} such)")
    for key, tensor in pre.items():
        other = fine[key]
        if tensor.shape != other.shape:
            raise ValueError(f"state dicts differ at {key!r}: shape {tuple(tensor.shape)} vs {tuple(other.shape)}")
        if tensor.dtype != other.dtype:
            raise ValueError(f"state dicts differ at {key!r}: dtype {tensor.dtype} vs {other.dtype}")


def interpolate_state_dicts(
    pre: Mapping[str, torch.Tensor], fine: Mapping[str, torch.Tensor], alpha: float | Mapping[str, float]
) -> dict[str, torch.Tensor]:
    """α·pre + (1−α)·fine for every floating tensor; other tensors must match exactly and are copied. ``alpha``: a
    number, or a mapping from every key to its own number (`check_alpha_map`)."""
    if not isinstance(alpha, Mapping):
        alpha = check_alpha(alpha)
    check_compatible(pre, fine)
    alphas = check_alpha_map(alpha, pre.keys()) if isinstance(alpha, Mapping) else dict.fromkeys(pre, alpha)
    mixed: dict[str, torch.Tensor] = {}
    for key, p in pre.items():
        f = fine[key].to(p.device)
        if p.is_floating_point():
            a = alphas[key]
            # float32 arithmetic for low-precision weights, then back to the stored dtype.
            value = a * p.float() + (1.0 - a) * f.float()
            mixed[key] = value.to(p.dtype)
        else:
            if not torch.equal(p, f):
                raise ValueError(f"non-floating tensor {key!r} ({p.dtype}) differs between pre and fine")
            mixed[key] = p.clone()
    return mixed


def interpolate_models(
    pre: torch.nn.Module, fine: torch.nn.Module, alpha: float | Mapping[str, float]
) -> torch.nn.Module:
    """A new model (a copy of ``fine``'s module) holding α·θ_pre + (1−α)·θ_fine; the inputs are left untouched.
    ``alpha``: a number, or state-dict name → number (`hybridft.layer_alpha.layer_alphas`)."""
    mixed_state = interpolate_state_dicts(pre.state_dict(), fine.state_dict(), alpha)
    mixed = copy.deepcopy(fine)
    mixed.load_state_dict(mixed_state, strict=True)
    return mixed
