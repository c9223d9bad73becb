"""The length-bucketed sampler: every index once per epoch, batches of near-equal length, shuffled batch order."""

from __future__ import annotations

import numpy as np
import pytest

from hybridft.batching import BucketedSampler, bucketed_order, padded_ratio


def _lengths(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, 120, size=n)


@pytest.mark.parametrize(("n", "batch"), [(1, 4), (7, 4), (64, 8), (1001, 32)])
def test_each_epoch_is_a_permutation_cut_into_batches(seed, n, batch):
    lengths = _lengths(seed, n)
    batches = bucketed_order(lengths, batch, seed)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(n))
    assert all(len(b) == batch for b in batches[:-1])  # only the last batch of the epoch may be short
    assert 1 <= len(batches[-1]) <= batch


def test_sampler_order_groups_into_the_same_batches_as_the_dataloader(seed):
    lengths = _lengths(seed, 203)
    sampler = BucketedSampler(lengths, 16, seed=1)
    sampler.set_epoch(3)
    indices = list(sampler)
    expected = bucketed_order(lengths, 16, 1 * 100_003 + 3)
    chunks = [indices[i : i + 16] for i in range(0, len(indices), 16)]
    assert [list(map(int, b)) for b in expected] == chunks


def test_bucketing_removes_most_padding_against_random_batches(seed):
    lengths = _lengths(seed, 2000)
    random_batches = np.array_split(np.random.default_rng(seed).permutation(2000), 2000 // 32)
    bucketed = bucketed_order(lengths, 32, seed)
    assert padded_ratio(lengths, bucketed) < 1.1 < padded_ratio(lengths, random_batches)


def test_batch_order_is_shuffled_not_sorted_by_length(seed):
    """Trainer's group_by_length sweeps the lengths in order within mega-batches; ours must not."""
    lengths = _lengths(seed, 3200)
    batches = bucketed_order(lengths, 32, seed)
    means = np.array([lengths[b].mean() for b in batches])
    # a sorted sweep has a rank correlation of ±1 with position; a shuffle is near 0
    ranks = np.argsort(np.argsort(means))
    corr = np.corrcoef(ranks, np.arange(len(ranks)))[0, 1]
    assert abs(corr) < 0.35


def test_new_order_every_epoch_and_reproducible_per_seed(seed):
    lengths = _lengths(seed, 300)
    a, b = BucketedSampler(lengths, 8, seed=5), BucketedSampler(lengths, 8, seed=5)
    first, second = list(a), list(a)  # without set_epoch, each iteration moves to the next epoch
    assert first != second
    assert first == list(b) and second == list(b)
    other = BucketedSampler(lengths, 8, seed=6)
    assert list(other) != first


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lengths": [], "batch_size": 4, "seed": 0}, "non-empty"),
    ({"lengths": [3, 4], "batch_size": 0, "seed": 0}, "batch_size"),
    ({"lengths": [3, 4], "batch_size": 2, "seed": 0, "window_batches": 0}, "window_batches"),
])  # fmt: skip
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BucketedSampler(**kwargs)
