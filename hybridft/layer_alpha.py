"""Per-layer mixing weights: one α per depth group of a transformer, for θ_mix = α_g·θ_pre + (1−α_g)·θ_fine.

Groups (`layer_groups`), in the model's state-dict order: g = 0 holds everything before the first encoder layer
(the embeddings), g = 1..L the encoder layer g−1 (the index ``i`` of a ``.layer.<i>.`` / ``.layers.<i>.`` segment of
the name), g = L+1 everything after the last layer (BERT's pooler and the task head; an LM's final norm and head).
A tensor tied to an earlier one (an LM head sharing the embedding) takes the earlier name's group, so both names
get the same value.

Values (`group_alphas`): a list [a_0, …, a_K], K ≥ 1, is spread over the depth as mergekit's "gradient" parameters
are: group g gets the piecewise-linear interpolation of the list at position t = g/(L+1)·K, so a_0 is the
embeddings' α, a_K the head's, and the values in between fall on evenly spaced depths (a list of L+2 values gives
one α per group as written). It is evaluated as a_i + (t − i)·(a_{i+1} − a_i), i = ⌊t⌋, which gives each a_i exactly at
its own position and a constant list exactly everywhere (an all-0 list is θ_fine, an all-1 list θ_pre, bit for bit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

LAYER_INDEX = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


@dataclass(frozen=True)
class LayerGroups:
    """The depth group of every state-dict name of a model (module docstring) and its number of encoder layers."""

    of: dict[str, int]
    num_layers: int

    @property
    def count(self) -> int:
        """Number of groups: embeddings, each layer, what follows the last layer."""
        return self.num_layers + 2


def check_layer_values(values, owner: str = "alpha") -> tuple[float, ...]:
    """``values`` as a tuple of floats, or TypeError/ValueError naming ``owner``: a list of at least 2 numbers in
    [0, 1] (1 = the pretrained teacher, 0 = the fine-tuned one)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{owner} must be a list of numbers in [0, 1] (per-layer α), got {type(values).__name__}")
    if len(values) < 2:
        raise ValueError(
            f"{owner} as a per-layer list needs at least 2 values (embeddings … head; a single α is a number), "
            f"got {list(values)!r}"
        )
    out = []
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{owner}[{i}] must be a number in [0, 1], got {value!r}")
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{owner}[{i}] must be in [0, 1] (1 = the pretrained teacher), got {value!r}")
        out.append(float(value))
    return tuple(out)


def layer_groups(model: torch.nn.Module) -> LayerGroups:
    """Group every state-dict name of ``model`` by depth (module docstring). ValueError if no name carries a layer
    index or the indices are not 0..L−1."""
    state = model.state_dict(keep_vars=True)
    indices: dict[str, int] = {}
    for name in state:
        found = LAYER_INDEX.search(name)
        if found:
            indices[name] = int(found.group(1))
    if not indices:
        raise ValueError(
            f"{type(model).__name__} has no parameter named like '.layer.<i>.' or '.layers.<i>.': "
            "per-layer α needs a model with numbered encoder layers"
        )
    layers = sorted(set(indices.values()))
    if layers != list(range(len(layers))):
        raise ValueError(f"{type(model).__name__}: layer indices must be 0..L-1, got {layers}")
    num_layers = len(layers)
    groups: dict[str, int] = {}
    first_of: dict[int, str] = {}  # id of a tensor → the first name it was seen under (tied weights)
    seen_layer = False
    for name, tensor in state.items():
        earlier = first_of.setdefault(id(tensor), name)
        if name in indices:
            seen_layer = True
            group = indices[name] + 1
        else:
            group = num_layers + 1 if seen_layer else 0
        groups[name] = groups[earlier] if earlier != name else group
    return LayerGroups(of=groups, num_layers=num_layers)


def group_alphas(values: Sequence[float], num_groups: int) -> list[float]:
    """α of each of ``num_groups`` groups: ``values`` interpolated at position g/(num_groups−1)·K (module docstring)."""
    values = check_layer_values(values)
    if num_groups < 2:
        raise ValueError(f"num_groups must be >= 2 (embeddings and head), got {num_groups}")
    k = len(values) - 1
    out = []
    for g in range(num_groups):
        t = g * k / (num_groups - 1)
        i = min(math.floor(t), k)
        if i == k:
            out.append(values[k])
            continue
        a, b = values[i], values[i + 1]
        value = a + (t - i) * (b - a)
        out.append(min(max(value, min(a, b)), max(a, b)))  # rounding never leaves the segment
    return out


def layer_alphas(model: torch.nn.Module, values: Sequence[float]) -> dict[str, float]:
    """State-dict name → α for every tensor of ``model``: its group's `group_alphas` value."""
    groups = layer_groups(model)
    per_group = group_alphas(values, groups.count)
    return {name: per_group[g] for name, g in groups.of.items()}


__all__ = ["LayerGroups", "check_layer_values", "group_alphas", "layer_alphas", "layer_groups"]
