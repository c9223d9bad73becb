"""Length-bucketed batches with a shuffled batch order: the training sampler of every method.

The cost of a batch grows with its padded length, so batches of similar lengths save most of the padding. The
Trainer's own ``group_by_length`` keeps each mega-batch's batches in sorted order (longest first, then shorter), so
an epoch sweeps through the lengths; length correlates with the labels on GLUE and the model drifts (measured on
SST-2: 48.8 % against 81.0 % with random batches at the same budget, see `bench/trainer/bench_batching.py`).

`BucketedSampler` instead, once per epoch and seeded by (seed, epoch):

1. draws a random permutation of the examples;
2. cuts it into windows of ``window_batches × batch_size`` examples and sorts each window by length;
3. cuts every window into batches of ``batch_size`` (only the very last batch of the epoch can be short);
4. shuffles the order of the full batches (the short one, if any, stays last so that the DataLoader's own
   grouping into ``batch_size`` consecutive indices reproduces exactly these batches).

It is a plain index sampler (the DataLoader groups consecutive indices into batches), so DDP sharding by
accelerate, fractional epochs and the distillation index column all work unchanged: every feature keeps its own
row number. ``set_epoch`` is called by the Trainer through accelerate; without it each ``__iter__`` moves on to
the next epoch by itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

BATCHING_MODES = ("bucketed", "random")
DEFAULT_WINDOW_BATCHES = 50


def bucketed_order(lengths: Sequence[int], batch_size: int, seed: int, window_batches: int = DEFAULT_WINDOW_BATCHES):
    """The batches of one epoch as a list of index arrays (see the module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if window_batches < 1:
        raise ValueError(f"window_batches must be >= 1, got {window_batches}")
    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    window = window_batches * batch_size
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    short = [b for b in batches if len(b) < batch_size]
    shuffled = [full[i] for i in rng.permutation(len(full))]
    return shuffled + short


def longest_first(lengths: Sequence[int]) -> np.ndarray:
    """Indices ordered by length, longest first (ties keep their order): for forward-only passes, whose batches then
    pad little (`hybridft.fitting.predict`, the teacher pass `hybridft.distill.length_sorted_pass`)."""
    return np.argsort(-np.asarray(lengths), kind="stable")


class BucketedSampler(torch.utils.data.Sampler[int]):
    """Indices of length-bucketed batches in shuffled batch order; a new order every epoch."""

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int, window_batches: int = DEFAULT_WINDOW_BATCHES
    ):
        self.lengths = np.asarray(lengths)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ValueError(f"lengths must be a non-empty 1-D sequence, got shape {self.lengths.shape}")
        self.batch_size, self.seed, self.window_batches = int(batch_size), int(seed), int(window_batches)
        self.epoch = 0
        self._explicit_epoch = False
        bucketed_order(self.lengths[:1], self.batch_size, 0, self.window_batches)  # validates the arguments

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._explicit_epoch = int(epoch), True

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        batches = bucketed_order(self.lengths, self.batch_size, self.seed * 100_003 + self.epoch, self.window_batches)
        if not self._explicit_epoch:
            self.epoch += 1
        self._explicit_epoch = False
        for batch in batches:
            yield from (int(i) for i in batch)


def feature_lengths(features, column: str = "input_ids") -> list[int]:
    """Token count of every feature (features are unpadded: dynamic padding happens in the collator)."""
    if column not in features.column_names:
        raise ValueError(f"features have no {column!r} column to measure lengths; columns: {features.column_names}")
    return [len(ids) for ids in features[column]]


def padded_ratio(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Σ(batch size × longest in batch) / Σ lengths: how much of the compute goes to padding (1.0 = none)."""
    lengths = np.asarray(lengths)
    padded = sum(len(b) * int(lengths[np.asarray(b)].max()) for b in batches if len(b))
    return padded / max(1, int(lengths.sum()))


__all__ = ["BATCHING_MODES", "BucketedSampler", "bucketed_order", "feature_lengths", "longest_first", "padded_ratio"]
