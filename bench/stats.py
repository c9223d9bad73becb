"""Statistics for the tables, from run records only (numpy; deterministic: fixed-seed ``numpy.random.default_rng``).

- `metric_from_stats(kind, rows)` (from `bench.scoring`, re-exported): a headline recomputed from a run's per-example ``eval_stats``; the bootstrap
  versions `metric_from_stats_boot(kind, rows, idx)` (an index matrix (B, n) of resampled examples) and
  `metric_from_weights(kind, rows, W)` (a (B, n) matrix of how often each example was drawn) give B values at once.
  Kinds: ``mean`` (rows [score]), ``f1_counts`` ([tp, fp, fn]: 2·Σtp / (2·Σtp + Σfp + Σfn), 0 when that
  denominator is 0), ``mcc_counts`` ([tp, fp, fn, tn]: Matthews correlation of the summed counts, 0 when
  undefined), ``pearson`` and ``spearman`` ([prediction, label]; 0 when a side is constant). Spearman ranks with
  average ties (as scipy.stats.spearmanr), exactly also inside a resample: an example drawn k times is k tied
  copies. Values are on the record's raw scale (the scale of its ``headline``).
- `summary(scores)`: n, mean, sample std (None for n < 2), median.
- `t_interval(values)`: the mean with its 95 % Student t-interval and two-sided p-value; `holm(p_values)`: Holm's
  step-down rejections over one family of comparisons.
- `paired_difference(method_runs, baseline_runs)` / `paired_differences(...)`: method minus baseline (percentage
  points) over the seeds both finished ok: the paired t-interval over the per-seed differences (the interval that
  decides), and beside it the examples' uncertainty, a 95 % percentile interval from a two-level paired bootstrap
  (seeds, then evaluation examples: one example draw per resample shared by every seed when the runs share their
  evaluation subset, as their fingerprints say; a draw per seed otherwise).
- `paired_mean_difference(method_sets, baseline_sets)`: the same for the mean over several evaluation sets (a
  task's shift sets): one shared seed draw, each set's examples drawn on their own.
- `mean_interval(sets)`: one method's mean (over seeds, and over several evaluation sets) with the same bootstrap.
- `variance_ratio(scores, baseline)`: s²/s² over seeds with its F-distribution 95 % interval (normality assumed).
- Flags: `failed_to_learn(record)` / `count_failed_to_learn(records)` (the run did not beat the trivial constant
  predictor, ``majority_baseline``) and `collapsed(record)` (a regression whose predictions barely vary, or a
  classifier that predicts one class far beyond its share; `prediction_share`, `attach_labels`).

Bad input raises `StatsInputError` naming the runs: the two runs of a pair scored on different evaluation subsets
(or example counts); `MissingExampleStats` (a StatsInputError) for a run without usable per-example statistics
where its examples are to be resampled: none, malformed, or not giving its headline (the difference functions
then report no bootstrap and say why, unless asked to require them). Runs of one side
without an ok partner at their seed are left out of a pair and named (``Difference.unpaired``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.stats import f as f_dist
from scipy.stats import t as t_dist

# The metrics from per-example statistics live with their producer, bench.scoring; re-exported here.
from bench import scoring
from bench.scoring import STAT_KINDS as KINDS
from bench.scoring import (
    as_rows,
    index_weights,
    metric_from_stats,
    metric_from_stats_boot,
    metric_from_weights,
    top_class_share,
)

PERCENT_METRIC_MODULES = ("squad",)  # these report percentages already; every other headline is a fraction
N_BOOT = 2000
CONFIDENCE = 0.95
SHARED = "shared"  # one example draw per resample, shared by every seed (one evaluation subset)
PER_SEED = "per seed"  # a fresh example draw per seed slot (subsets differ between seeds, or unrecorded)
NO_DRAW = "none"  # no bootstrap over examples (a run without eval_stats)
_CHUNK_ELEMENTS = 2_000_000  # resamples are evaluated in chunks of about this many (resample, example) cells
_HEADLINE_TOLERANCE = 1e-4  # raw units: eval_stats must give the record's headline within this


# ------------------------------------------------------------------------------------------------------- records
class StatsInputError(ValueError):
    """Records the statistics cannot compare as asked; the message names the runs."""


class MissingExampleStats(StatsInputError):
    """A run without usable per-example statistics (``eval_stats`` absent, malformed, or not giving its headline):
    its examples cannot be resampled."""


def run_name(record: Mapping[str, Any]) -> str:
    """How an error or a note names a run: model, method, task, seed (and its status when not ok)."""
    status = record.get("status", "ok")
    return (f"{record.get('model', '?')}/{record.get('method', '?')}/{record.get('task', '?')} seed "
            f"{record.get('seed', '?')}" + ("" if status == "ok" else f" ({status})"))  # fmt: skip


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
    headline <= majority_baseline (as bench.scoring.failed_to_learn). A record with neither the field nor a majority baseline counts as learned
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
    return baseline is not None and headline <= baseline + 1e-12  # the tolerance of bench.scoring


def count_failed_to_learn(records: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """(k, n): k of the n recorded runs failed to learn (failed and diverged runs included in both)."""
    flags = [failed_to_learn(r) for r in records]
    return sum(flags), len(flags)


COLLAPSE_SD_RATIO = scoring.COLLAPSE_SD_RATIO
COLLAPSE_EXCESS = scoring.COLLAPSE_EXCESS


def prediction_share(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The most-predicted class of a classification run on its eval rows: {"class", "share" (s), "label_share" (q,
    that class's true share), "source"}; None when it cannot be known ("not recorded").

    From the record's ``prediction_share`` (new records; source "recorded" unless it says otherwise), else from
    eval_stats rows that determine each prediction: binary F1 or Matthews counts ([tp, fp, fn(, tn)] per example:
    predicted positive = tp + fp, labelled positive = tp + fn) of a classification task. Per-example correctness
    alone does not give the predictions: such records need their labels attached (`attach_labels`)."""
    recorded = record.get("prediction_share")
    if isinstance(recorded, Mapping):
        return {"source": "recorded", **recorded}
    stats = record.get("eval_stats")
    if record.get("task_kind") != "classification" or not isinstance(stats, Mapping) or not stats.get("rows"):
        return None
    kind = stats.get("kind")
    if kind not in ("f1_counts", "mcc_counts"):
        return None
    rows = as_rows(kind, stats["rows"])
    predicted = (rows[:, 0] + rows[:, 1]) > 0
    labelled = (rows[:, 0] + rows[:, 2]) > 0
    return _share(predicted.astype(int), labelled.astype(int), 2, f"eval_stats ({kind})")


def _share(predicted: np.ndarray, labels: np.ndarray, num_classes: int, source: str) -> dict[str, Any]:
    return {**top_class_share(predicted, labels, num_classes), "source": source}


def shares_from_correctness(correct: Iterable[float], labels: Iterable[int]) -> dict[str, Any]:
    """`prediction_share` of a binary task from per-example correctness (1 right, 0 wrong) and the labels: a wrong
    prediction is the other class."""
    right = np.asarray(list(correct), dtype=float).reshape(-1)
    gold = np.asarray(list(labels), dtype=int).reshape(-1)
    if len(right) != len(gold) or not len(gold):
        raise StatsInputError(f"need as many labels as correctness rows, got {len(gold)} and {len(right)}")
    if not set(np.unique(gold)) <= {0, 1} or not set(np.unique(right)) <= {0.0, 1.0}:
        raise StatsInputError("shares_from_correctness needs a binary task: labels in {0, 1}, correctness in {0, 1}")
    predicted = np.where(right == 1.0, gold, 1 - gold)
    return _share(predicted, gold, 2, "correctness and labels")


def attach_labels(records: list[dict[str, Any]], labels: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records, with ``prediction_share`` derived (`shares_from_correctness`) for each record and shift entry
    that lacks it, holds per-example correctness (eval_stats kind "mean") and whose evaluation subset's fingerprint
    has binary labels in ``labels`` (fingerprint → {"num_labels", "labels"}: bench.eval_labels). Copies; the
    inputs are not changed. StatsInputError (naming the run) when the labels do not match the rows in number."""

    def derive(entry: Mapping[str, Any], subset: Mapping[str, Any] | None, owner: Mapping[str, Any]):
        stats = entry.get("eval_stats")
        known = labels.get((subset or {}).get("fingerprint") or "")
        if (isinstance(entry.get("prediction_share"), Mapping) or not known or known.get("num_labels") != 2
                or not isinstance(stats, Mapping) or stats.get("kind") != "mean" or not stats.get("rows")):  # fmt: skip
            return None
        if len(known["labels"]) != len(stats["rows"]):
            raise StatsInputError(f"{run_name(owner)}: {len(known['labels'])} labels for {len(stats['rows'])} "
                                  f"eval rows of subset {subset}")  # fmt: skip
        return shares_from_correctness([row[0] for row in stats["rows"]], known["labels"])

    out = []
    for r in records:
        r = dict(r)
        share = derive(r, (r.get("subsets") or {}).get("eval"), r)
        if share is not None:
            r["prediction_share"] = {**share, "source": "eval_labels.json"}
        if isinstance(r.get("shift_metrics"), Mapping):
            shifts = {}
            for name, entry in r["shift_metrics"].items():
                share = derive(entry, entry.get("subset"), r) if isinstance(entry, Mapping) else None
                shifts[name] = entry if share is None else {**entry, "prediction_share": {**share,
                                                                                         "source": "eval_labels.json"}}  # fmt: skip
            r["shift_metrics"] = shifts
        out.append(r)
    return out


def judges_collapse(record: Mapping[str, Any]) -> bool:
    """Whether `collapsed` applies to the run's task: regression and classification (causal-LM label choice, whose
    metric is GLUE's, included); tokens, spans and generated answers are not judged. Where it applies and
    `collapsed` says None, the run's prediction share is not recorded."""
    kind = (record.get("eval_stats") or {}).get("kind")
    label_choice = record.get("task_kind") == "causal_lm" and record.get("metric_name") == "glue"  # sst2_lm
    return kind in ("pearson", "spearman") or record.get("task_kind") == "classification" or label_choice


def collapsed(record: Mapping[str, Any]) -> bool | None:
    """True when an ok run's predictions collapsed (`bench.scoring.collapsed`); None when it cannot be judged
    (not ok, or not recorded).

    - Regression (eval_stats rows [prediction, label]): sd(prediction) / sd(label) < COLLAPSE_SD_RATIO.
    - Classification: with s the most-predicted class's share of the eval rows and q its true share
      (`prediction_share`), (s − q) / (1 − q) > COLLAPSE_EXCESS: the run predicts one class far beyond its share.
    Judged from the record's data where it has them (the record's own ``collapsed`` otherwise); other tasks
    (tokens, spans, generation) are not judged. Kept apart from `failed_to_learn`: a collapsed run can beat the
    majority baseline on F1, and a run can fail to learn without collapsing."""
    if record.get("status", "ok") != "ok":
        return None
    stats = record.get("eval_stats")
    judged = scoring.collapsed(dict(stats) if isinstance(stats, Mapping) else None, prediction_share(record))
    if judged is None and isinstance(record.get("collapsed"), bool):
        return record["collapsed"]
    return judged


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


# ---------------------------------------------------------------------------------------------- seed-level interval
@dataclass(frozen=True)
class TInterval:
    """The mean of per-seed values with its Student t-interval and the two-sided p-value of "mean = 0".

    low, high and p_value are None for n < 2 (no interval from one seed). With a zero sample std the interval is the
    point itself and p is 0 for a non-zero mean, 1 for a zero one."""

    n: int
    mean: float | None
    low: float | None
    high: float | None
    p_value: float | None


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> TInterval:
    """Mean ± t(1 − (1 − confidence)/2; n − 1) · s/√n over the values (per-seed differences, or per-seed scores)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    data = [float(v) for v in values]
    if any(not math.isfinite(v) for v in data):
        raise ValueError(f"t_interval needs finite values, got {data}")
    n = len(data)
    if n == 0:
        return TInterval(0, None, None, None, None)
    mean = statistics.fmean(data)
    if n < 2:
        return TInterval(1, mean, None, None, None)
    se = statistics.stdev(data) / math.sqrt(n)
    if se == 0.0:
        return TInterval(n, mean, mean, mean, 0.0 if mean != 0.0 else 1.0)
    half = float(t_dist.ppf(1.0 - (1.0 - confidence) / 2.0, n - 1)) * se
    p_value = float(2.0 * t_dist.sf(abs(mean) / se, n - 1))
    return TInterval(n, mean, mean - half, mean + half, p_value)


def holm(p_values: Iterable[float | None], alpha: float = 1.0 - CONFIDENCE) -> list[bool]:
    """Holm's step-down test over one family: True where the hypothesis is rejected at family-wise level ``alpha``.

    Sort the m given p-values ascending; reject the i-th smallest (i = 1…m) while p_(i) ≤ alpha / (m − i + 1), and
    stop at the first that is not. None (no test: fewer than 2 seeds) is never rejected and does not count in m."""
    ps = list(p_values)
    tested = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    for p, _ in tested:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values must lie in [0, 1], got {p!r}")
    rejected = [False] * len(ps)
    m = len(tested)
    for rank, (p, i) in enumerate(tested):
        if p > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


# ---------------------------------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class Difference:
    """Method minus baseline over the seeds both finished ok, in percentage points.

    - ``diff``: the mean of the per-seed differences of the headline (= the difference of the two means).
    - ``t_low``, ``t_high``, ``p_value``: the paired Student t-interval (95 %) over those per-seed differences and
      its two-sided p-value; None with fewer than 2 paired seeds. This is the interval that decides.
    - ``boot_low``, ``boot_high``: the 95 % percentile interval of the two-level paired bootstrap (seeds, then
      evaluation examples), the examples' uncertainty; ``draw`` says how examples were drawn: "shared" (one draw
      per resample for every seed: the runs share one evaluation subset), "per seed" (the subsets differ between
      seeds, or their fingerprints were not recorded) or "none" (no bootstrap; ``note`` says why).
    - ``unpaired``: the runs left out because the other side has no ok run at their seed, named.
    """

    diff: float
    n_seeds: int
    t_low: float | None
    t_high: float | None
    p_value: float | None
    boot_low: float | None = None
    boot_high: float | None = None
    draw: str = NO_DRAW
    note: str = ""
    unpaired: tuple[str, ...] = ()

    @property
    def excludes_zero(self) -> bool:
        """The (unadjusted) t-interval excludes 0."""
        return self.t_low is not None and (self.t_low > 0 or self.t_high < 0)


def _ok_by_seed(runs: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """Seed → the run that finished ok with a finite headline (the last one given, if repeated)."""
    out = {}
    for r in runs:
        if r.get("status") == "ok" and headline_percent(r) is not None:
            out[r["seed"]] = r
    return out


def _eval_rows(record: Mapping[str, Any]) -> tuple[str, np.ndarray]:
    """(kind, rows) of a record's eval_stats; MissingExampleStats (naming the run) without them, or when they are
    malformed or do not give the record's headline."""
    stats = record.get("eval_stats")
    if not isinstance(stats, Mapping) or not stats.get("rows"):
        raise MissingExampleStats(f"{run_name(record)}: its metric has no per-example statistics (eval_stats), so "
                                  "its evaluation examples cannot be resampled")  # fmt: skip
    kind = stats.get("kind")
    try:
        rows = as_rows(kind, stats["rows"])
    except ValueError as err:
        raise MissingExampleStats(f"{run_name(record)}: eval_stats unusable ({err})") from None
    recomputed = metric_from_stats(kind, rows)
    if not math.isclose(recomputed, float(record["headline"]), rel_tol=0.0, abs_tol=_HEADLINE_TOLERANCE):
        raise MissingExampleStats(f"{run_name(record)}: eval_stats give {recomputed:.6g}, the record's headline is "
                                  f"{record['headline']:.6g}")  # fmt: skip
    return kind, rows


def fingerprint(record: Mapping[str, Any]) -> str | None:
    """The content fingerprint of the run's evaluation subset, None when not recorded."""
    return ((record.get("subsets") or {}).get("eval") or {}).get("fingerprint")


def example_design(runs: list[Mapping[str, Any]]) -> str:
    """How a bootstrap over these runs' evaluation examples must draw them: SHARED when every run records the same
    evaluation fingerprint (one subset: one draw per resample serves every seed), else PER_SEED."""
    prints = {fingerprint(r) for r in runs}
    return SHARED if len(prints) == 1 and None not in prints else PER_SEED


def _example_plan(pairs: list[tuple[Mapping, Mapping]]) -> list[tuple[tuple[str, np.ndarray], tuple]]:
    """Per seed ((kind, rows) of the method, (kind, rows) of the baseline). The two runs of a seed are paired on
    their examples, so they must share the evaluation subset: StatsInputError (naming them) when their fingerprints
    or example counts differ; MissingExampleStats when a side has no eval_stats."""
    plan = []
    for method_run, base_run in pairs:
        mine, theirs = _eval_rows(method_run), _eval_rows(base_run)
        a, b = fingerprint(method_run), fingerprint(base_run)
        if a and b and a != b:
            raise StatsInputError(f"{run_name(method_run)} and {run_name(base_run)} were scored on different "
                                  f"evaluation subsets (fingerprints {a[:12]}… and {b[:12]}…): a paired comparison "
                                  "needs the same examples")  # fmt: skip
        if len(mine[1]) != len(theirs[1]):
            raise StatsInputError(f"{run_name(method_run)} and {run_name(base_run)} have eval_stats of different "
                                  f"lengths ({len(mine[1])} vs {len(theirs[1])})")  # fmt: skip
        plan.append((mine, theirs))
    return plan


def _seed_counts(choice: np.ndarray, n_seeds: int) -> np.ndarray:
    """(B, S) how often each seed position was drawn in each resample."""
    counts = np.zeros((choice.shape[0], n_seeds))
    np.add.at(counts, (np.arange(choice.shape[0])[:, None], choice), 1.0)
    return counts


def _bootstrap_means(plans: list[list], factors: list[list[float]], n_boot: int, seed: int, design: str,
                     example_seed: Any = None) -> list[np.ndarray]:  # fmt: skip
    """(B,) bootstrap means (percent) per plan, all plans sharing one resampling of seeds and examples.

    ``plans[j][s]`` is (kind, rows) of plan j (a method, the baseline) at seed position s: all plans have the same
    seeds and example counts; ``factors[j][s]`` turns raw values into percent. Each resample draws S seeds with
    replacement; then
    - SHARED: one draw of the n examples per resample, used for every drawn seed (the seeds were scored on the
      same examples, so an unlucky draw of examples is unlucky for every seed at once);
    - PER_SEED: for each seed slot, a fresh draw of that seed's examples.
    The same draws serve every plan (the pairing). The seed draw depends only on ``seed``, B and S; with
    ``example_seed`` the example draws come from a generator of their own (calls for different evaluation sets
    share the seed draw but not the example draws)."""
    rng = np.random.default_rng(seed)
    n_seeds = len(plans[0])
    choice = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    if example_seed is not None:
        rng = np.random.default_rng(example_seed)
    if design == SHARED:
        counts = _seed_counts(choice, n_seeds) / n_seeds
        means = [np.zeros(n_boot) for _ in plans]
        n = len(plans[0][0][1])
        step = max(1, _CHUNK_ELEMENTS // max(1, n))
        for start in range(0, n_boot, step):
            block = slice(start, min(n_boot, start + step))
            weights = index_weights(rng.integers(0, n, size=(block.stop - start, n)), n)
            for j, plan in enumerate(plans):
                for s, (kind, data) in enumerate(plan):
                    means[j][block] += counts[block, s] * metric_from_weights(kind, data, weights) * factors[j][s]
        return means
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


def _percentile_interval(values: np.ndarray) -> tuple[float, float]:
    tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def _unpaired(mine: list[Mapping[str, Any]], base: list[Mapping[str, Any]], paired: set) -> tuple[str, ...]:
    """The runs of either side whose seed is not paired, named (sorted by seed, then method)."""
    left = sorted((r for side in (mine, base) for r in side if r.get("seed") not in paired),
                  key=lambda r: (str(r.get("seed")), str(r.get("method"))))  # fmt: skip
    return tuple(run_name(r) for r in left)


def _paired_seeds(mine: list[Mapping[str, Any]], base: list[Mapping[str, Any]]):
    """(seeds both finished ok, method by seed, baseline by seed, the runs left unpaired)."""
    ok_mine, ok_base = _ok_by_seed(mine), _ok_by_seed(base)
    seeds = sorted(set(ok_mine) & set(ok_base))
    return seeds, ok_mine, ok_base, _unpaired(mine, base, set(seeds))


def paired_differences(
    candidates: Mapping[str, Iterable[Mapping[str, Any]]],
    baseline_runs: Iterable[Mapping[str, Any]],
    n_boot: int = N_BOOT,
    seed: int = 0,
    *,
    require_examples: bool = False,
) -> dict[str, Difference | None]:
    """`paired_difference` of several methods against one baseline (one task), sharing resampling work.

    Each method's result equals ``paired_difference(its runs, baseline_runs, n_boot, seed)``: methods with the same
    seeds, example counts and draw design share one resampling plan, which depends only on those and on ``seed``.
    """
    base_runs = list(baseline_runs)
    out: dict[str, Difference | None] = {}
    groups: dict[tuple, list[tuple]] = {}
    for name, runs in candidates.items():
        runs = list(runs)
        seeds, mine, base, unpaired = _paired_seeds(runs, base_runs)
        if not seeds:
            out[name] = None
            continue
        pairs = [(mine[s], base[s]) for s in seeds]
        per_seed = [headline_percent(m) - headline_percent(b) for m, b in pairs]
        t = t_interval(per_seed)
        point = Difference(t.mean, len(seeds), t.low, t.high, t.p_value, unpaired=unpaired)
        try:
            plan = _example_plan(pairs)
        except MissingExampleStats as err:
            if require_examples:
                raise
            out[name] = replace(point, note=str(err))
            continue
        design = example_design([r for pair in pairs for r in pair])
        key = (tuple(seeds), tuple(len(p[0][1]) for p in plan), design)
        groups.setdefault(key, []).append((name, plan, pairs, point))
    for (_, _, design), members in groups.items():
        pairs0, plan0 = members[0][2], members[0][1]
        plans = [[p[1] for p in plan0]] + [[p[0] for p in m[1]] for m in members]
        factors = [[percent_factor(b) for _, b in pairs0]] + [[percent_factor(r) for r, _ in m[2]] for m in members]
        base_means, *method_means = _bootstrap_means(plans, factors, n_boot, seed, design)
        for (name, _, _, point), means in zip(members, method_means, strict=True):
            low, high = _percentile_interval(means - base_means)
            out[name] = replace(point, boot_low=low, boot_high=high, draw=design)
    return {name: out[name] for name in candidates}


def paired_mean_difference(
    method_sets: list[Iterable[Mapping[str, Any]]],
    baseline_sets: list[Iterable[Mapping[str, Any]]],
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Difference | None:
    """Method minus baseline in the mean over several evaluation sets (one task's shift sets) of their headlines.

    ``method_sets[j]`` / ``baseline_sets[j]``: the runs scored on set j (records whose headline and eval_stats are
    set j's). Uses the seeds where both have every set. The t-interval is over the per-seed differences of the
    sets' mean; the bootstrap is `paired_difference`'s with one seed draw shared by all sets (a drawn seed counts
    on every set) and the examples of each set drawn on their own (shared across seeds within a set when its runs
    share the subset)."""
    if len(method_sets) != len(baseline_sets) or not method_sets:
        raise ValueError(f"need the same non-zero number of sets, got {len(method_sets)} and {len(baseline_sets)}")
    method_sets, baseline_sets = [list(x) for x in method_sets], [list(x) for x in baseline_sets]
    mine = [_ok_by_seed(runs) for runs in method_sets]
    base = [_ok_by_seed(runs) for runs in baseline_sets]
    seeds = sorted(set.intersection(*(set(m) for m in mine), *(set(b) for b in base)))
    if not seeds:
        return None
    unpaired = _unpaired(method_sets[0], baseline_sets[0], set(seeds))
    hm = np.array([[headline_percent(m[s]) for s in seeds] for m in mine])  # (sets, seeds)
    hb = np.array([[headline_percent(b[s]) for s in seeds] for b in base])
    t = t_interval(hm.mean(axis=0) - hb.mean(axis=0))
    point = Difference(t.mean, len(seeds), t.low, t.high, t.p_value, unpaired=unpaired)
    try:
        plans = [_example_plan([(m[s], b[s]) for s in seeds]) for m, b in zip(mine, base, strict=True)]
    except MissingExampleStats as err:
        return replace(point, note=str(err))
    boot = np.zeros(n_boot)
    designs = set()
    for j, (plan, m, b) in enumerate(zip(plans, mine, base, strict=True)):
        design = example_design([m[s] for s in seeds] + [b[s] for s in seeds])
        designs.add(design)
        factors = [[percent_factor(b[s]) for s in seeds], [percent_factor(m[s]) for s in seeds]]
        base_means, method_means = _bootstrap_means([[p[1] for p in plan], [p[0] for p in plan]], factors, n_boot,
                                                    seed, design, example_seed=[seed, j + 1])  # fmt: skip
        boot += (method_means - base_means) / len(plans)
    low, high = _percentile_interval(boot)
    return replace(point, boot_low=low, boot_high=high, draw=SHARED if designs == {SHARED} else PER_SEED)


def mean_interval(sets: list[Iterable[Mapping[str, Any]]], n_boot: int = N_BOOT, seed: int = 0):
    """(mean, low, high, n_seeds, draw) of one method's headline (percent), averaged over the evaluation sets given
    (one set: its plain mean), with the two-level bootstrap's 95 % interval (seeds drawn once for all sets, the
    examples of each set drawn as `example_design` says); low = high = None and draw NO_DRAW when a run lacks
    eval_stats; None without a seed that has every set."""
    by_seed = [_ok_by_seed(runs) for runs in sets]
    seeds = sorted(set.intersection(*(set(b) for b in by_seed))) if by_seed else []
    if not seeds:
        return None
    values = np.array([[headline_percent(b[s]) for s in seeds] for b in by_seed]).mean(axis=0)
    mean = float(values.mean())
    try:
        rows = [[_eval_rows(b[s]) for s in seeds] for b in by_seed]
    except MissingExampleStats:
        return mean, None, None, len(seeds), NO_DRAW
    boot = np.zeros(n_boot)
    designs = set()
    for j, (plan, b) in enumerate(zip(rows, by_seed, strict=True)):
        design = example_design([b[s] for s in seeds])
        designs.add(design)
        (means,) = _bootstrap_means([plan], [[percent_factor(b[s]) for s in seeds]], n_boot, seed, design,
                                    example_seed=[seed, j + 1] if len(rows) > 1 else None)  # fmt: skip
        boot += means / len(rows)
    low, high = _percentile_interval(boot)
    return mean, low, high, len(seeds), SHARED if designs == {SHARED} else PER_SEED


def variance_ratio(scores: Iterable[float], baseline: Iterable[float], confidence: float = CONFIDENCE):
    """(s²_method / s²_baseline, low, high): the sample-variance ratio over seeds with its F-distribution interval
    (both samples independent and normal: the interval's assumption). None where a side has < 2 scores or the
    baseline's variance is 0; low/high None for a ratio without an interval."""
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
    *,
    require_examples: bool = False,
) -> Difference | None:
    """Method minus baseline (one task) over the seeds both finished ok (`Difference`), or None when they share no
    such seed. Runs of one side without an ok partner are left out and named in ``unpaired``.

    The t-interval is over the per-seed differences. Each of ``n_boot`` bootstrap resamples draws the seeds with
    replacement (the same seeds for both), then the evaluation examples with replacement (the same example indices
    for both: a pair shares its evaluation subset; one draw for every seed when all runs share it), recomputes both
    headlines from ``eval_stats``, averages each over the drawn seeds and takes the difference. A run without
    ``eval_stats`` (or with eval_stats that do not give its headline) leaves the bootstrap out (``draw`` "none",
    ``note`` names it), or with ``require_examples`` raises MissingExampleStats naming it. StatsInputError, naming
    the runs, when the two runs of a seed were scored on different evaluation subsets.
    """
    return paired_differences({"method": method_runs}, baseline_runs, n_boot, seed, require_examples=require_examples)[
        "method"
    ]


__all__ = [
    "KINDS",
    "Difference",
    "MissingExampleStats",
    "StatsInputError",
    "Summary",
    "TInterval",
    "attach_labels",
    "collapsed",
    "count_failed_to_learn",
    "example_design",
    "failed_to_learn",
    "fingerprint",
    "headline_percent",
    "holm",
    "index_weights",
    "judges_collapse",
    "mean_interval",
    "metric_from_stats",
    "metric_from_stats_boot",
    "metric_from_weights",
    "paired_difference",
    "paired_differences",
    "paired_mean_difference",
    "percent",
    "percent_factor",
    "prediction_share",
    "run_name",
    "shares_from_correctness",
    "summary",
    "t_interval",
    "variance_ratio",
]
