"""Does the interval that decides cover? A seeded simulation of normal seed effects plus per-example noise, run
through bench.stats.paired_difference as the tables run it, checks the paired t-interval's coverage of the true
difference at 3 and 5 seeds, and shows why a percentile bootstrap over so few seeds was replaced."""

from __future__ import annotations

import numpy as np
import pytest

from bench import stats

pytest.importorskip("scipy.stats")

REPLICATIONS = 2000
EXAMPLES = 300
EFFECT = 0.03  # the method's true gain: 3 accuracy points on every evaluation set
SEED_SD = 0.02  # a seed moves a model's accuracy by this much (normal)


def _simulate(n_seeds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(R, S) accuracies of method and baseline: per replication a fresh evaluation set of example difficulties,
    per seed a normal effect on each model, then each example right or wrong at random (another model, other
    errors). The estimand (the expected difference over seeds on that set) is EFFECT exactly: no probability is
    clipped (checked in the function)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(0.3, 0.85, size=(REPLICATIONS, 1, EXAMPLES))
    shift_b = rng.normal(0.0, SEED_SD, size=(REPLICATIONS, n_seeds, 1))
    shift_m = rng.normal(0.0, SEED_SD, size=(REPLICATIONS, n_seeds, 1))
    p_b, p_m = difficulty + shift_b, difficulty + EFFECT + shift_m
    assert p_b.min() > 0 and p_m.max() < 1  # no clipping: the estimand is EFFECT
    base = (rng.random(p_b.shape) < p_b).mean(axis=2)
    method = (rng.random(p_m.shape) < p_m).mean(axis=2)
    return method, base


def _records(method: str, accuracies: np.ndarray) -> list[dict]:
    return [{"model": "sim", "task": "sst2", "method": method, "seed": s, "status": "ok", "headline": float(a),
             "metric_name": "glue"} for s, a in enumerate(accuracies)]  # fmt: skip


@pytest.mark.parametrize(("n_seeds", "floor"), [(3, 0.92), (5, 0.93)])
def test_paired_t_interval_covers_the_true_difference(n_seeds, floor):
    method, base = _simulate(n_seeds, seed=100 + n_seeds)
    covered = []
    for m, b in zip(method, base, strict=True):
        d = stats.paired_difference(_records("hybrid", m), _records("plain", b))
        assert d.n_seeds == n_seeds and d.draw == stats.NO_DRAW  # no eval_stats: the t-interval alone
        covered.append(d.t_low <= 100 * EFFECT <= d.t_high)
    coverage = float(np.mean(covered))
    assert floor <= coverage <= 0.975, coverage  # 2000 replications: ±1 point of binomial noise around 95 %


def test_a_percentile_bootstrap_over_three_seeds_under_covers():
    """The interval this replaced: resample the 3 per-seed differences with replacement. With 3 seeds it cannot
    reach the tails (at most 10 distinct means), so it covers far less than 95 %."""
    method, base = _simulate(3, seed=7)
    diffs = 100 * (method - base)
    rng = np.random.default_rng(0)
    choice = rng.integers(0, 3, size=(1000, 3))
    covered = []
    for d in diffs:
        low, high = np.percentile(d[choice].mean(axis=1), [2.5, 97.5])
        covered.append(low <= 100 * EFFECT <= high)
    assert np.mean(covered) < 0.85
