"""Statistics for the tables, from run records only (numpy; deterministic: fixed-seed ``numpy.random.default_rng``).

- `metric_from_stats(kind, rows)` (from `hybridft.scoring`, re-exported): a headline recomputed from a run's per-example ``eval_stats``; the bootstrap
  versions `metric_from_stats_boot(kind, rows, idx)` (an index matrix (B, n) of resampled examples) and
  `metric_from_weights(kind, rows, W)` (a (B, n) matrix of how often each example was drawn) give B values at once.
  Kinds: ``mean`` (rows [score]), ``f1_counts`` ([tp, fp, fn]: 2·Σtp / (2·Σtp + Σfp + Σfn), 0 when that
  denominator is 0), ``mcc_counts`` ([tp, fp, fn, tn]: Matthews correlation of the summed counts, 0 when
  undefined), ``pearson`` and ``spearman`` ([prediction, label]; 0 when a side is constant). Spearman ranks with
  average ties (as scipy.stats.spearmanr), exactly also inside a resample: an example drawn k times is k tied
  copies. Values are on the record's raw scale (the scale of its ``headline``).
- `summary(scores)`: n, mean, sample std (None for n < 2), median.
- `paired_difference(method_runs, baseline_runs)` / `paired_differences(...)`: the difference in mean headline
  (percent) of a method minus a baseline over the seeds both finished ok, with a 95 % percentile interval from a
  two-level paired bootstrap (seeds, then evaluation examples within each drawn seed), or from seeds alone when
  ``eval_stats`` are missing.
- `paired_mean_difference(method_sets, baseline_sets)`: the same for the mean over several evaluation sets (a
  task's shift sets): one shared seed draw, each set's examples drawn independently.
- `mean_interval(sets)`: one method's mean (over seeds, and over several evaluation sets) with the same bootstrap.
- `variance_ratio(scores, baseline)`: s²/s² over seeds with its F-distribution 95 % interval (normality assumed).
- `failed_to_learn(record)` and `count_failed_to_learn(records)`: the k/n of runs that did not beat the trivial
  constant predictor (``majority_baseline``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# The metrics from per-example statistics live with their producer, hybridft.scoring; re-exported here.
from hybridft.scoring import STAT_KINDS as KINDS
from hybridft.scoring import (
    as_rows,
    index_weights,
    metric_from_stats,
    metric_from_stats_boot,
    metric_from_weights,
)

PERCENT_METRIC_MODULES = ("squad",)  # these report percentages already; every other headline is a fraction
N_BOOT = 2000
CONFIDENCE = 0.95
TWO_LEVEL = "seeds+examples"
SEEDS_ONLY = "seeds"
_CHUNK_ELEMENTS = 2_000_000  # resamples are evaluated in chunks of about this many (resample, example) cells
_HEADLINE_TOLERANCE = 1e-4  # raw units: eval_stats must give the record's headline within this


# ------------------------------------------------------------------------------------------------------- records
def percent_factor(record: Mapping[str, Any]) -> float:
    """100 for 0–1 headlines, 1 for the metric modules that report percentages (SQuAD)."""
    module = record.get("metric_name") or ("squad" if str(record.get("task", "")).startswith("squad") else "")
    return 1.0 if module in PERCENT_METRIC_MODULES else 100.0


def _finite(value: Any) -> float | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)


def percent(record: Mapping[str, Any], raw: Any) -> float | None:
    """A value on the record's raw headline scale in percent; None when absent or non-finite."""
    value = _finite(raw)
    return None if value is None else value * percent_factor(record)


def headline_percent(record: Mapping[str, Any]) -> float | None:
    """The record's headline in percent; None when absent or non-finite."""
    return percent(record, record.get("headline"))


def failed_to_learn(record: Mapping[str, Any]) -> bool:
    """True when a run did not beat the trivial constant predictor, or did not finish ok.

    A failed or diverged status counts as not learned. Otherwise the record's boolean ``failed_to_learn`` is used;
    a record without it is judged the same way from its fields: headline missing or non-finite, or
    headline <= majority_baseline (as hybridft.scoring.failed_to_learn). A record with neither the field nor a majority baseline counts as learned
    when it has a finite headline (there is nothing to compare it with).
    """
    if record.get("status", "ok") != "ok":
        return True
    flag = record.get("failed_to_learn")
    if isinstance(flag, bool):
        return flag
    headline = _finite(record.get("headline"))
    if headline is None:
        return True
    baseline = _finite(record.get("majority_baseline"))
    return baseline is not None and headline <= baseline + 1e-12  # the tolerance of hybridft.scoring


def count_failed_to_learn(records: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(k, n): k of the n recorded runs failed to learn (failed and diverged runs included in both)."""
    flags = [failed_to_learn(r) for r in records]
    return sum(flags), len(flags)


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    std: float | None  # sample std (n - 1); None for n < 2
    median: float | None


def summary(scores: Iterable[float]) -> Summary:
    values = [float(s) for s in scores]
    if not values:
        return Summary(0, None, None, None)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Summary(len(values), statistics.fmean(values), std, statistics.median(values))


# ---------------------------------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class Difference:
    """Method minus baseline, mean headline in percentage points, with a 95 % percentile bootstrap interval.

    ``method`` is "seeds+examples" (two-level bootstrap) or "seeds" (seed-only, when eval_stats are missing or
    unusable; ``note`` says why). A seed-only bootstrap of one seed has no interval: low = high = None.
    """

    diff: float
    low: float | None
    high: float | None
    n_seeds: int
    method: str
    excludes_zero: bool
    note: str = ""


def _ok_by_seed(runs: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """Seed → the run that finished ok with a finite headline (the last one given, if repeated)."""
    out = {}
    for r in runs:
        if r.get("status") == "ok" and headline_percent(r) is not None:
            out[r["seed"]] = r
    return out


def _eval_rows(record: Mapping[str, Any]) -> tuple[str, np.ndarray] | str:
    """(kind, rows) of a record's eval_stats, or the reason they cannot be used."""
    stats = record.get("eval_stats")
    if not isinstance(stats, Mapping) or not stats.get("rows"):
        return "eval_stats missing"
    kind = stats.get("kind")
    try:
        rows = as_rows(kind, stats["rows"])
    except ValueError as err:
        return f"eval_stats unusable ({err})"
    recomputed = metric_from_stats(kind, rows)
    if not math.isclose(recomputed, float(record["headline"]), rel_tol=0.0, abs_tol=_HEADLINE_TOLERANCE):
        return f"eval_stats give {recomputed:.6g}, the record's headline is {record['headline']:.6g}"
    return kind, rows


def _fingerprint(record: Mapping[str, Any]) -> Any:
    return ((record.get("subsets") or {}).get("eval") or {}).get("fingerprint")


def _example_plan(pairs: list[tuple[Mapping, Mapping]]) -> list[tuple[tuple[str, np.ndarray], tuple]] | str:
    """Per seed ((kind, rows) of the method, (kind, rows) of the baseline), or why examples cannot be resampled."""
    plan = []
    for method_run, base_run in pairs:
        mine, theirs = _eval_rows(method_run), _eval_rows(base_run)
        for who, got in (("method", mine), ("baseline", theirs)):
            if isinstance(got, str):
                return f"{who} seed {method_run['seed']}: {got}"
        if len(mine[1]) != len(theirs[1]):
            return f"seed {method_run['seed']}: eval_stats of different lengths ({len(mine[1])} vs {len(theirs[1])})"
        a, b = _fingerprint(method_run), _fingerprint(base_run)
        if a and b and a != b:
            return f"seed {method_run['seed']}: different evaluation subsets"
        plan.append((mine, theirs))
    return plan


def _two_level(plans: list[list], factors: list[list[float]], n_boot: int, seed: int,
               example_seed: Any = None) -> list[np.ndarray]:  # fmt: skip
    """(B,) bootstrap means per evaluation set, sharing one resampling plan.

    ``plans[j][s]`` is (kind, rows) of evaluation set j at seed position s (all sets: same seeds and example
    counts); ``factors[j][s]`` turns its raw values into percent. Draw seeds (B, S) with replacement; for each slot
    k and each seed s, the resamples that drew s at k get fresh example indices (one draw shared by every set).
    The seed draw depends only on ``seed``, B and S; with ``example_seed`` the example draws come from a generator
    of their own (so calls for different evaluation data share the seed draw but not the example draws).
    """
    rng = np.random.default_rng(seed)
    n_seeds = len(plans[0])
    choice = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    if example_seed is not None:
        rng = np.random.default_rng(example_seed)
    values = [np.zeros((n_boot, n_seeds)) for _ in plans]
    for slot in range(n_seeds):
        for s in range(n_seeds):
            where = np.flatnonzero(choice[:, slot] == s)
            n = len(plans[0][s][1])
            step = max(1, _CHUNK_ELEMENTS // max(1, n))
            for start in range(0, len(where), step):
                rows_b = where[start : start + step]
                weights = index_weights(rng.integers(0, n, size=(len(rows_b), n)), n)
                for j, plan in enumerate(plans):
                    kind, data = plan[s]
                    values[j][rows_b, slot] = metric_from_weights(kind, data, weights) * factors[j][s]
    return [v.mean(axis=1) for v in values]


def _interval(diffs: np.ndarray) -> tuple[float, float]:
    tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    return float(low), float(high)


def _result(diff: float, low: float | None, high: float | None, n_seeds: int, method: str, note: str = ""):
    excludes = low is not None and high is not None and (low > 0 or high < 0)
    return Difference(diff, low, high, n_seeds, method, bool(excludes), note)


def paired_differences(
    candidates: Mapping[str, Iterable[Mapping[str, Any]]],
    baseline_runs: Iterable[Mapping[str, Any]],
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Difference | None]:
    """`paired_difference` of several methods against one baseline (one task), sharing resampling work.

    Each method's result equals ``paired_difference(its runs, baseline_runs, n_boot, seed)``: methods with the same
    seeds and example counts share one resampling plan, which depends only on those and on ``seed``.
    """
    base = _ok_by_seed(baseline_runs)
    out: dict[str, Difference | None] = {}
    groups: dict[tuple, list[tuple]] = {}
    for name, runs in candidates.items():
        mine = _ok_by_seed(runs)
        seeds = sorted(set(mine) & set(base))
        if not seeds:
            out[name] = None
            continue
        pairs = [(mine[s], base[s]) for s in seeds]
        hm = np.array([headline_percent(m) for m, _ in pairs])
        hb = np.array([headline_percent(b) for _, b in pairs])
        diff = float(hm.mean() - hb.mean())
        plan = _example_plan(pairs)
        if isinstance(plan, str):
            if len(seeds) < 2:
                out[name] = _result(diff, None, None, 1, SEEDS_ONLY, plan)
                continue
            choice = np.random.default_rng(seed).integers(0, len(seeds), size=(n_boot, len(seeds)))
            low, high = _interval(hm[choice].mean(axis=1) - hb[choice].mean(axis=1))
            out[name] = _result(diff, low, high, len(seeds), SEEDS_ONLY, plan)
            continue
        key = (tuple(seeds), tuple(len(p[0][1]) for p in plan))
        groups.setdefault(key, []).append((name, seeds, plan, pairs, diff))
    for members in groups.values():
        pairs0, plan0 = members[0][3], members[0][2]
        plans = [[p[1] for p in plan0]] + [[p[0] for p in m[2]] for m in members]
        factors = [[percent_factor(b) for _, b in pairs0]] + [[percent_factor(r) for r, _ in m[3]] for m in members]
        base_means, *method_means = _two_level(plans, factors, n_boot, seed)
        for (name, seeds, _, _, diff), means in zip(members, method_means, strict=True):
            low, high = _interval(means - base_means)
            out[name] = _result(diff, low, high, len(seeds), TWO_LEVEL)
    return {name: out[name] for name in candidates}


def paired_mean_difference(
    method_sets: list[Iterable[Mapping[str, Any]]],
    baseline_sets: list[Iterable[Mapping[str, Any]]],
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Difference | None:
    """Method minus baseline in the mean over several evaluation sets (one task's shift sets) of their headlines.

    ``method_sets[j]`` / ``baseline_sets[j]``: the runs scored on set j (records whose headline and eval_stats are
    set j's). Uses the seeds where both have every set. The bootstrap is `paired_difference`'s, with one seed draw
    shared by all sets (a drawn seed counts on every set) and the examples of each set drawn independently;
    without usable eval_stats anywhere it resamples seeds only."""
    if len(method_sets) != len(baseline_sets) or not method_sets:
        raise ValueError(f"need the same non-zero number of sets, got {len(method_sets)} and {len(baseline_sets)}")
    mine = [_ok_by_seed(runs) for runs in method_sets]
    base = [_ok_by_seed(runs) for runs in baseline_sets]
    seeds = sorted(set.intersection(*(set(m) for m in mine), *(set(b) for b in base)))
    if not seeds:
        return None
    hm = np.array([[headline_percent(m[s]) for s in seeds] for m in mine])  # (sets, seeds)
    hb = np.array([[headline_percent(b[s]) for s in seeds] for b in base])
    diff = float(hm.mean(axis=0).mean() - hb.mean(axis=0).mean())
    plans = [_example_plan([(m[s], b[s]) for s in seeds]) for m, b in zip(mine, base, strict=True)]
    unusable = next((p for p in plans if isinstance(p, str)), None)
    if unusable is not None:
        if len(seeds) < 2:
            return _result(diff, None, None, 1, SEEDS_ONLY, unusable)
        choice = np.random.default_rng(seed).integers(0, len(seeds), size=(n_boot, len(seeds)))
        per_seed = hm.mean(axis=0) - hb.mean(axis=0)
        low, high = _interval(per_seed[choice].mean(axis=1))
        return _result(diff, low, high, len(seeds), SEEDS_ONLY, unusable)
    boot = np.zeros(n_boot)
    for j, (plan, m, b) in enumerate(zip(plans, mine, base, strict=True)):
        factors = [[percent_factor(b[s]) for s in seeds], [percent_factor(m[s]) for s in seeds]]
        base_means, method_means = _two_level([[p[1] for p in plan], [p[0] for p in plan]], factors, n_boot, seed,
                                              example_seed=[seed, j + 1])  # fmt: skip
        boot += (method_means - base_means) / len(plans)
    low, high = _interval(boot)
    return _result(diff, low, high, len(seeds), TWO_LEVEL)


def mean_interval(sets: list[Iterable[Mapping[str, Any]]], n_boot: int = N_BOOT, seed: int = 0):
    """(mean, low, high, n_seeds, method) of one method's headline (percent), averaged over the evaluation sets
    given (one set: its plain mean), with the two-level bootstrap's 95 % interval (seeds drawn once for all sets,
    examples per set); seeds only where eval_stats are missing; None without a seed that has every set."""
    by_seed = [_ok_by_seed(runs) for runs in sets]
    seeds = sorted(set.intersection(*(set(b) for b in by_seed))) if by_seed else []
    if not seeds:
        return None
    values = np.array([[headline_percent(b[s]) for s in seeds] for b in by_seed]).mean(axis=0)
    mean = float(values.mean())
    rows = [[_eval_rows(b[s]) for s in seeds] for b in by_seed]
    if any(isinstance(r, str) for plan in rows for r in plan):
        if len(seeds) < 2:
            return mean, None, None, 1, SEEDS_ONLY
        choice = np.random.default_rng(seed).integers(0, len(seeds), size=(n_boot, len(seeds)))
        low, high = _interval(values[choice].mean(axis=1))
        return mean, low, high, len(seeds), SEEDS_ONLY
    boot = np.zeros(n_boot)
    for j, (plan, b) in enumerate(zip(rows, by_seed, strict=True)):
        (means,) = _two_level([plan], [[percent_factor(b[s]) for s in seeds]], n_boot, seed,
                              example_seed=[seed, j + 1] if len(rows) > 1 else None)  # fmt: skip
        boot += means / len(rows)
    low, high = _interval(boot)
    return mean, low, high, len(seeds), TWO_LEVEL


def variance_ratio(scores: Iterable[float], baseline: Iterable[float], confidence: float = CONFIDENCE):
    """(s²_method / s²_baseline, low, high): the sample-variance ratio over seeds with its F-distribution interval
    (both samples independent and normal: the interval's assumption). None where a side has < 2 scores or the
    baseline's variance is 0; low/high None for a ratio without an interval."""
    from scipy.stats import f as f_dist

    a, b = [float(x) for x in scores], [float(x) for x in baseline]
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a), statistics.variance(b)
    if vb == 0:
        return None
    ratio = va / vb
    tail = (1.0 - confidence) / 2.0
    d1, d2 = len(a) - 1, len(b) - 1
    return ratio, ratio / float(f_dist.ppf(1.0 - tail, d1, d2)), ratio / float(f_dist.ppf(tail, d1, d2))


def paired_difference(
    method_runs: Iterable[Mapping[str, Any]],
    baseline_runs: Iterable[Mapping[str, Any]],
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Difference | None:
    """Method minus baseline (one task): mean headline in percent over the seeds both finished ok, with a 95 %
    percentile interval from a two-level paired bootstrap, or None when they share no such seed.

    Each of ``n_boot`` resamples draws the seeds with replacement (the same seeds for both), then within each drawn
    seed draws the evaluation examples with replacement (the same example indices for both: they share the
    evaluation subset), recomputes both headlines from ``eval_stats``, averages each over the drawn seeds and takes
    the difference. When any involved run lacks usable ``eval_stats`` (or the two runs of a seed were evaluated on
    different subsets), only seeds are resampled (``method`` "seeds", ``note`` says why).
    """
    return paired_differences({"method": method_runs}, baseline_runs, n_boot, seed)["method"]


__all__ = [
    "KINDS",
    "Difference",
    "Summary",
    "count_failed_to_learn",
    "failed_to_learn",
    "headline_percent",
    "index_weights",
    "mean_interval",
    "metric_from_stats",
    "metric_from_stats_boot",
    "metric_from_weights",
    "paired_difference",
    "paired_differences",
    "paired_mean_difference",
    "percent",
    "percent_factor",
    "summary",
    "variance_ratio",
]
