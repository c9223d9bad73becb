"""Out-of-distribution tables from the records' ``shift_metrics`` (bench.shift), and the stability table.

- OOD table: per task the in-distribution headline (ID), the mean over the task's shift sets (OOD avg, when it has
  more than one) and each shift set, then the label-noise sets (CoNLL++) apart; mean ± std over seeds with the main
  table's marks, and a majority-baseline row per set (the trivial constant predictor on that set).
- OOD summary: per method and task the ID mean and the OOD mean with 95 % two-level bootstrap intervals.
- OOD differences vs the baselines: the same columns as method − baseline in percentage points with the paired
  t-interval over seeds (bold when Holm-significant) and the examples' two-level bootstrap (bench.stats; OOD avg:
  `paired_mean_difference`); the per-set columns are labelled exploratory.
- Stability: per method and task over the seeds, the std, the worst seed, the failed-to-learn count and the
  variance ratio against plain with its F-distribution interval (`bench.stats.variance_ratio`).

Every shift number is read from a *view* of a run record (`shift_view`): the record with its headline, eval_stats,
evaluation subset and baseline replaced by one shift set's, so the main table's cells and the bootstrap apply
unchanged.
"""

from __future__ import annotations

import statistics
from typing import Any

from scipy.stats import f as f_dist

from bench import stats
from bench.render import Table
from bench.table_core import (
    BASELINES,
    COLLAPSED_MARK,
    FLAG_NOTE,
    TASK_LABELS,
    Cell,
    add_difference_rows,
    baseline_blocks,
    cells,
    difference_headers,
    fmt_num,
    holm_family,
    interval_notes,
    layout,
    pairing_notes,
    run_rank,
)

AVG = "__ood_avg__"  # the column of the mean over a task's shift sets
ID = None  # the column of the in-distribution headline


def shift_view(record: dict[str, Any], name: str) -> dict[str, Any] | None:
    """``record`` as if shift set ``name`` were its evaluation split; None when the run has no such entry."""
    entry = (record.get("shift_metrics") or {}).get(name)
    if entry is None:
        return None
    view = {k: v for k, v in record.items() if k not in ("shift_metrics", "extra_metrics")}
    view.update(headline=entry.get("headline"), headline_metric=entry.get("headline_metric"),
                eval_stats=entry.get("eval_stats"), majority_baseline=entry.get("majority_baseline"),
                failed_to_learn=entry.get("failed_to_learn"), subsets={"eval": entry.get("subset") or {}},
                prediction_share=entry.get("prediction_share"), collapsed=entry.get("collapsed"))  # fmt: skip
    return view


def shift_sets(runs: list[dict[str, Any]], task: str) -> tuple[list[str], list[str]]:
    """(shift sets, label-noise sets) that the runs of ``task`` carry, in first-seen order."""
    seen: dict[str, str] = {}
    for r in sorted(runs, key=run_rank):
        if r["task"] == task:
            for name, entry in (r.get("shift_metrics") or {}).items():
                seen.setdefault(name, entry.get("role", "shift"))
    return [n for n, role in seen.items() if role != "label_noise"], [n for n, role in seen.items() if role == "label_noise"]  # fmt: skip


def mean_view(record: dict[str, Any], names: list[str]) -> dict[str, Any] | None:
    """``record`` with the mean over shift sets ``names`` as its headline (raw scale), None unless it has them all;
    failed to learn when that mean is at or below the mean of the sets' trivial baselines."""
    views = [shift_view(record, n) for n in names]
    if any(v is None for v in views):
        return None
    values = [stats._finite(v.get("headline")) for v in views]
    baselines = [stats._finite(v.get("majority_baseline")) for v in views]
    view = {**views[0], "eval_stats": None, "subsets": {}, "prediction_share": None, "collapsed": None}
    mean = statistics.fmean(values) if all(x is not None for x in values) else None
    base = statistics.fmean(baselines) if all(x is not None for x in baselines) else None
    view.update(headline=mean, majority_baseline=base,
                failed_to_learn=mean is None or (base is not None and mean <= base + 1e-12))  # fmt: skip
    return view


def columns(runs: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(task, column) for the tasks with shift sets: ID, OOD avg (when > 1 set), each shift set, label-noise sets."""
    _, tasks, _ = layout(runs)
    out: list[tuple[str, str | None]] = []
    for task in tasks:
        shifts, noise = shift_sets(runs, task)
        if not shifts and not noise:
            continue
        out.append((task, ID))
        if len(shifts) > 1:
            out.append((task, AVG))
        out += [(task, n) for n in shifts] + [(task, n) for n in noise]
    return out


def column_runs(runs: list[dict[str, Any]], task: str, column: str | None) -> list[dict[str, Any]]:
    """The task's runs as seen by one column (views; runs without that set are left out, failed runs kept)."""
    mine = [r for r in runs if r["task"] == task]
    if column is ID:
        return mine
    names = shift_sets(runs, task)[0] if column == AVG else [column]
    out = []
    for r in mine:
        view = mean_view(r, names) if column == AVG else shift_view(r, column)
        if view is not None:
            out.append(view)
        elif r["status"] != "ok":
            out.append(r)  # a run that failed before shift scoring stays visible as failed
    return out


def _label(task: str, column: str | None) -> str:
    name = TASK_LABELS.get(task, task)
    return f"{name} ID" if column is ID else f"{name} OOD avg" if column == AVG else f"{name} {column}"


def ood_table(runs: list[dict[str, Any]]) -> Table | None:
    """ID, OOD average and per-set scores per method (mean ± std over seeds); None when no run has shift sets."""
    cols = columns(runs)
    if not cols:
        return None
    models, _, methods = layout(runs)
    grids = {(t, c): cells(column_runs(runs, t, c)) for t, c in cols}
    table = Table("Out of distribution: headline (%) in distribution (ID) and on each shift set, mean ± std over seeds",
                  ["Model", "Method", *(_label(t, c) for t, c in cols)])  # fmt: skip
    for model in models:
        table.start_block()
        for method in methods[model]:
            table.add([model, method, *(grids[k].get((model, method, k[0]), Cell()).text() for k in cols)])
        baselines = []
        for task, column in cols:
            values = [stats.percent(r, r.get("majority_baseline")) for r in column_runs(runs, task, column)
                      if r["model"] == model and r["status"] == "ok"]  # fmt: skip
            values = [v for v in values if v is not None]
            baselines.append(fmt_num(statistics.fmean(values)) if values else "–")
        table.add([model, "majority baseline", *baselines])
    sets = sorted({n for t, c in cols for n in ([c] if c not in (ID, AVG) else [])})
    metrics = sorted({f"{n}: {v['headline_metric']}" for r in runs for n, v in (r.get("shift_metrics") or {}).items()
                      if v.get("headline_metric") not in (None, r.get("headline_metric"))})  # fmt: skip
    table.notes.append(
        "Each run is scored on its task's evaluation split (ID) and on every shift set of the task (bench.shift; "
        "a fixed seeded subset per set, in the records' shift_metrics.subset); OOD avg: the mean over the task's "
        "shift sets, per seed, then over seeds. Label-noise sets (conllpp: CoNLL-2003 test with corrected labels) "
        f"are not shifts and not in OOD avg. Sets: {', '.join(sets)}. Marks as in the main table, per set; ⚠ on OOD "
        "avg: the mean at or below the mean of the sets' majority baselines (collapse is judged per set). No bold: "
        "see the differences table."
    )
    table.notes.append(FLAG_NOTE)
    if metrics:
        table.notes.append(f"Headline metric where it differs from the task's: {'; '.join(metrics)} (plo_f1: entity "
                           "F1 over PER/LOC/ORG, predicted MISC spans dropped; WNUT-17 has no MISC).")  # fmt: skip
    return table


def _interval_text(result) -> str:
    if result is None:
        return "–"
    mean, low, high, _, method = result
    text = fmt_num(mean) + (f" [{fmt_num(low)}, {fmt_num(high)}]" if low is not None else "")
    return text + (" (per seed)" if method == stats.PER_SEED else "")


def ood_summary_table(runs: list[dict[str, Any]], n_boot: int = stats.N_BOOT, seed: int = 0) -> Table | None:
    """Per method and task: the ID mean and the OOD mean (over the task's shift sets) with 95 % bootstrap CIs."""
    tasks = [t for t, c in columns(runs) if c is ID]
    if not tasks:
        return None
    models, _, methods = layout(runs)
    header = [x for t in tasks for x in (f"{TASK_LABELS.get(t, t)} ID", f"{TASK_LABELS.get(t, t)} OOD")]
    table = Table("Out of distribution: ID and OOD means with 95 % CI", ["Model", "Method", *header])
    for model in models:
        table.start_block()
        for method in methods[model]:
            row = []
            for task in tasks:
                mine = [r for r in runs if (r["model"], r["method"], r["task"]) == (model, method, task)]
                names = shift_sets(runs, task)[0]
                per_set = [[v for r in mine for v in [shift_view(r, n)] if v is not None] for n in names]
                row += [_interval_text(stats.mean_interval([mine], n_boot, seed)),
                        _interval_text(stats.mean_interval(per_set, n_boot, seed) if names else None)]  # fmt: skip
            table.add([model, method, *row])
    table.notes.append(
        "Mean headline (%) over the seeds that finished ok and, for OOD, over the task's shift sets (label-noise "
        "sets excluded), with the 95 % percentile interval of the two-level bootstrap (seeds, then evaluation "
        "examples, one example draw per resample shared by the seeds that were scored on the same subset; one seed "
        "draw shared by a task's shift sets, examples drawn per set). It is the uncertainty of this protocol's mean "
        "at these seeds and examples, not of the method in general; compare methods in the differences table. "
        "(per seed): the subsets differ between seeds, each seed's examples drawn on their own; no interval: a run "
        "without per-example statistics."
    )
    return table


def _diff_label(task: str, column: str | None) -> str:
    """An OOD difference column's label: per-set columns are exploratory (one of many sets, picked after the fact
    they would be a forking path)."""
    return _label(task, column) + ("" if column in (ID, AVG) else " (exploratory)")


def ood_difference_table(runs: list[dict[str, Any]], n_boot: int = stats.N_BOOT, seed: int = 0) -> Table | None:
    """Method − baseline (plain, plain_matched, lora_matched) in every OOD-table column: the paired t-interval (bold
    when Holm-significant within the table, model and baseline) and the examples' bootstrap."""
    cols = columns(runs)
    models, _, methods = layout(runs)
    baselines = [b for b in BASELINES if any(r["method"] == b for r in runs)]
    if not cols or not baselines:
        return None
    table = Table(f"Out of distribution: differences vs {' and vs '.join(baselines)} (percentage points, 95 % "
                  f"intervals)", ["Model", "Baseline", "Method", "Seeds",
                                  *difference_headers([_diff_label(t, c) for t, c in cols])])  # fmt: skip
    views = {key: column_runs(runs, *key) for key in cols}
    not_bootstrapped, unpaired, counts = [], [], []
    for model, baseline, others in baseline_blocks(table, models, methods, baselines):
        results: dict[tuple, stats.Difference | None] = {}
        for key in cols:
            mine = {m: [r for r in views[key] if r["model"] == model and r["method"] == m] for m in others}
            base = [r for r in views[key] if r["model"] == model and r["method"] == baseline]
            if key[1] == AVG:
                names = shift_sets(runs, key[0])[0]
                per_set = {n: [r for r in column_runs(runs, key[0], n) if r["model"] == model] for n in names}
                found = {m: stats.paired_mean_difference(
                    [[r for r in per_set[n] if r["method"] == m] for n in names],
                    [[r for r in per_set[n] if r["method"] == baseline] for n in names], n_boot, seed)
                    for m in others}  # fmt: skip
            else:
                found = stats.paired_differences(mine, base, n_boot=n_boot, seed=seed)
            results.update({(model, baseline, m, key): d for m, d in found.items()})
        family = holm_family(results)
        counts += [c.difference.n_seeds for c in family]
        if family:
            missing, left = add_difference_rows(table, family, others, cols, 3)
            not_bootstrapped, unpaired = not_bootstrapped + missing, unpaired + left
    table.notes += interval_notes(n_boot, seed, "ID: the task's evaluation subset; OOD avg: the mean over the task's "
                                  "shift sets, per seed; a set: its headline", counts)  # fmt: skip
    table.notes.append(
        "OOD avg's bootstrap: one seed draw shared by the task's shift sets, the examples of each set drawn on their "
        "own. The per-set columns are exploratory: with several shift sets per task, the best of them is a pick "
        "among many comparisons; only ID and OOD avg are planned comparisons (the Holm family still counts every "
        "column)."
    )
    table.notes += pairing_notes(not_bootstrapped, unpaired)
    return table


def _worst(cell: Cell) -> str:
    if not cell.scores:
        return "–"
    return (fmt_num(min(cell.scores)) + (f" ⚠{cell.not_learned}/{cell.recorded}" if cell.not_learned else "")
            + (f" {COLLAPSED_MARK}{cell.collapsed}/{cell.recorded}" if cell.collapsed else ""))  # fmt: skip


def _f_span_text(counts: set[int]) -> str:
    """How far the variance ratio's F interval reaches each way at the seed counts of the table."""
    counts = sorted(n for n in counts if n >= 2)
    if not counts:
        return "with fewer than 2 seeds there is no interval"
    return "; ".join(f"with {n} seeds per side ({n - 1} and {n - 1} degrees of freedom) it spans a factor of about "
                     f"{float(f_dist.ppf(0.975, n - 1, n - 1)):.3g} each way" for n in counts)  # fmt: skip


def _ratio_text(scores: list[float], baseline: list[float]) -> str:
    result = stats.variance_ratio(scores, baseline)
    if result is None:
        return "–"
    ratio, low, high = result
    return f"{ratio:.2g} [{low:.2g}, {high:.2g}]"


def stability_table(runs: list[dict[str, Any]], baseline: str = "plain") -> Table | None:
    """Spread over seeds per method and task: std, worst seed (⚠ failed to learn), variance ratio vs ``baseline``."""
    models, tasks, methods = layout(runs)
    grid = cells(runs)
    if not any(len(c.scores) >= 2 for c in grid.values()):
        return None
    ood = {t for t, c in columns(runs) if c == AVG}
    keys = [(t, ID) for t in tasks] + [(t, AVG) for t in tasks if t in ood]
    grids = {key: grid if key[1] is ID else cells(column_runs(runs, *key)) for key in keys}
    header = []
    for task, column in keys:
        name = _label(task, column)
        header += [f"{name} std", f"{name} worst", f"{name} var ÷ {baseline}"]
    table = Table(f"Stability over seeds: std, worst seed and variance ratio vs {baseline} (95 % F interval)",
                  ["Model", "Method", "Seeds", *header])  # fmt: skip
    all_counts: set[int] = set()
    for model in models:
        table.start_block()
        for method in methods[model]:
            row = []
            counts = set()
            for key in keys:
                cell = grids[key].get((model, method, key[0]), Cell())
                base = grids[key].get((model, baseline, key[0]), Cell())
                counts.add(len(cell.scores))
                spread = stats.summary(cell.scores).std
                row += [fmt_num(spread) if spread is not None else "–", _worst(cell),
                        "1 (baseline)" if method == baseline else _ratio_text(cell.scores, base.scores)]  # fmt: skip
            seeds = "–" if not counts else "/".join(str(n) for n in sorted(counts))
            all_counts |= counts
            table.add([model, method, seeds, *row])
    table.notes.append(
        f"Over the seeds that finished ok: std = sample std (percentage points), worst = the lowest seed (⚠k/n: runs "
        f"that failed to learn; ⚠collapsed k/n: runs that collapsed, as in the main table), var ÷ {baseline} = s²(method) / s²({baseline}) with the 95 % interval "
        f"[r / F(0.975; n₁−1, n₂−1), r / F(0.025; n₁−1, n₂−1)]. That interval assumes the seed scores are "
        f"independent and normal; {_f_span_text(all_counts)}, so only a ratio far from 1 is evidence that a method "
        f"is more (or less) stable. A bootstrap over a handful of seeds would be degenerate and is not used."
    )
    return table


def shift_tables(runs: list[dict[str, Any]]) -> list[Table]:
    """The OOD table, its differences and the stability table (those that have data)."""
    tables = (ood_table(runs), ood_summary_table(runs), ood_difference_table(runs), stability_table(runs))
    return [t for t in tables if t is not None]
