"""Tables from a results folder's runs*.jsonl only: `python -m bench.tables DIR [--check]`.

Writes DIR/table.md and DIR/table.tex (and the plots, see bench.plots):
- a protocol header (models, subsets, training settings, offline deviations, hardware, code revision);
- the main table in the layout of the LoRA paper's Table 2: rows = methods with their trainable parameters,
  columns = tasks (plus a column per extra evaluation split a record carries in ``extra_metrics``, e.g. MNLI-mm),
  headline metric as mean ± sample std over the seeds that finished ok, the median when there are ≥ 3 such seeds,
  "(j/n ok)" when some seeds did not finish ok, "⚠k/n" when k of the n recorded runs failed to learn (see
  bench.stats.failed_to_learn), "⚠collapsed k/n" when k collapsed (bench.stats.collapsed), "θ↓k/n" when θ_pre was
  a weak teacher (at or below its majority baseline on dev) in k of the n runs that record ``weak_teacher``,
  "Compute ×plain" (median over tasks and seeds of train_flops ÷ plain's at the same model, task and seed) and a
  "majority baseline" row per model (the trivial constant predictor's headline per task). No bold (a best mean
  is not a finding) and no average over tasks (their metrics differ);
- differences vs plain, plain_matched and lora_matched: method − baseline in percentage points per task, with
  the paired Student t-interval over the per-seed differences (the interval that decides; bold when it excludes 0
  after Holm's correction within the model and baseline) and beside it the examples' uncertainty, a two-level
  paired bootstrap over seeds and evaluation examples (bench.stats.paired_differences);
- a teachers table, when the records carry ``teacher_scores``: per model, task and method the headline of θ_pre and
  θ_fine on dev (held-out, or cross-validated) and on the evaluation subset, the majority baselines, and the
  weak-teacher count;
- the out-of-distribution tables of bench.shift_tables (ID vs each shift set, differences, stability over seeds)
  when the records carry ``shift_metrics``;
- a per-seed table, where diverged and failed runs are shown (failures listed with their error) and runs that
  failed to learn are marked ✗;
- a cost table (time, peak memory, throughput), a compute table (tokens, optimizer steps, FLOPs, every training
  stage summed), the compute ratio plain_matched ÷ hybrid per task, the published reference rows of
  bench/references.toml (only there: never inside the main table, whose model, data and metric they need not
  share) and the α-sweep table.

Scores are percentages (0–1 metrics × 100; SQuAD EM/F1 already are). Fields added to the records later (headline
statistics, compute, baselines) may be missing from older records: those cells show "–". Ordering is canonical
(models by name, tasks and methods in a fixed order, seeds ascending), the bootstrap uses a fixed seed, and
nothing reads the clock, so the same records give byte-identical files. Beside the tables it writes summary.csv
(per task, model and method: n, mean, std, median, the t-interval of the mean, the flag counts) and differences.csv
(every comparison of the difference table, with both intervals and the Holm decision). A folder's eval_labels.json
(bench.eval_labels) gives the prediction share of classifiers whose records hold only per-example correctness.
`--check` regenerates in memory and exits 1 when a file on disk differs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import plots as plot_module
from bench import records as rec
from bench import stats
from bench.eval_labels import LABELS_FILE  # labels of evaluation subsets, for records with correctness only
from bench.profiles import tomllib
from bench.render import Table, render_latex, render_markdown
from bench.shift_tables import shift_tables
from bench.table_core import (
    BASELINES,
    COLLAPSE_SEED_MARK,
    COMPUTE_FIELDS,
    FLAG_NOTE,
    MAIN_TITLE,
    MATCHED_PAIRS,
    METHOD_ORDER,
    OFFLINE_NOTES,
    TASK_LABELS,
    TASK_ORDER,
    TEACHERS_TITLE,
    WEAK_MARK,
    Cell,
    Comparison,
    add_difference_rows,
    as_number,
    canonical_order,
    cells,
    column_label,
    compute_ratios,
    difference_headers,
    fmt_num,
    headline_names,
    holm_family,
    human_count,
    human_flops,
    interval_notes,
    layout,
    majority_scores,
    pairing_notes,
    record_flops,
    run_rank,
    score,
    score_columns,
    split_records,
    task_rank,
    trainable_text,
)


def main_table(runs: list[dict[str, Any]], references: list[dict[str, Any]] | None = None) -> Table:
    """LoRA-paper Table 2 layout: methods × tasks, mean ± std with the flag marks, compute, a majority-baseline row (no bold, no average over tasks).

    ``references`` only adds a pointer to the separate reference table: published rows never sit in this one.
    """
    models, tasks, methods = layout(runs)
    metric = headline_names(runs)
    columns = score_columns(runs, tasks)
    grids = {split: cells(runs, split) for split in sorted({s for _, s in columns if s is not None})}
    grids[None] = cells(runs, teachers=True)
    labels = [column_label(t, s, metric) for t, s in columns]
    table = Table(MAIN_TITLE, ["Model", "Method", "# Trainable", *labels, "Compute ×plain"])
    any_majority = any_compute = any_flag = any_weak = False
    unjudged = 0
    for model in models:
        table.start_block()
        for method in methods[model]:
            row_cells = [grids[s].get((model, method, t), Cell()) for t, s in columns]
            head_cells = [c for c, (_, s) in zip(row_cells, columns, strict=True) if s is None]
            ratios = compute_ratios(runs, model, method)
            any_compute = any_compute or bool(ratios)
            any_flag = any_flag or any(c.not_learned or c.collapsed for c in head_cells)
            any_weak = any_weak or any(c.weak_teachers for c in head_cells)
            unjudged += sum(c.collapse_unjudged for c in head_cells)
            ratio = f"{statistics.median(ratios):.2f}" if ratios else "–"
            table.add([model, method, trainable_text(runs, model, method), *(c.text() for c in row_cells), ratio])
        majority = [majority_scores(runs, model, t) if s is None else None for t, s in columns]
        if any(v is not None for v in majority):
            any_majority = True
            table.add([model, "majority baseline", "–", *(fmt_num(v) if v is not None else "–" for v in majority), "–"])
    table.notes.append(
        "Mean over the seeds that finished ok; ± is the sample std (n ≥ 2); (med x) is the median, shown for n ≥ 3 "
        "(for n ≤ 2 it equals the mean); (j/n ok) marks cells where some seeds diverged or failed (see the per-seed "
        "table). No bold: which mean is best is a question for the difference table, and no average over tasks: the "
        "columns are different metrics (accuracy, correlation, F1)."
    )
    if any_flag:
        table.notes.append(FLAG_NOTE + " failed_to_learn is the record's, or computed from headline and "
                           "majority_baseline for records without it.")  # fmt: skip
    if unjudged:
        table.notes.append(f"Collapse not judged for {unjudged} ok runs: their prediction share is not recorded "
                           "(per-example correctness only, and no labels to derive it from).")  # fmt: skip
    if any_weak:
        table.notes.append(
            f"{WEAK_MARK}k/n: in k of the n runs that record it (the record's weak_teacher), θ_pre was a weak teacher: "
            "its headline on dev ≤ the majority baseline on dev, so the pretrained teacher predicts no better than a "
            "constant (see the teachers table). Counted over every recorded run with the field, whatever its "
            "status; earlier records without it are not counted."
        )
    if any_majority:
        table.notes.append(
            "majority baseline: the headline of a trivial constant predictor on the same evaluation subset, as the "
            "records state it (the best constant class for accuracy and F1; 0 for correlations, Matthews "
            "correlation and entity F1; the empty answer for SQuAD)."
        )
    unjudged = sum(1 for r in runs if r["status"] == "ok" and not isinstance(r.get("failed_to_learn"), bool)
                   and stats.percent(r, r.get("majority_baseline")) is None and score(r) is not None)  # fmt: skip
    if unjudged:
        table.notes.append(f"{unjudged} ok runs carry neither failed_to_learn nor a majority baseline (earlier "
                           "records): they are not judged and count as learned.")  # fmt: skip
    if any(s is not None for _, s in columns):
        table.notes.append(
            "Columns with a split suffix (e.g. MNLI-mm) are extra evaluation splits of the same runs, same metric "
            "(mm = validation_mismatched)."
        )
    if any_compute:
        table.notes.append(
            "Compute ×plain: median over tasks and seeds of the run's train_flops (every training stage of the "
            "method summed) ÷ plain's train_flops at the same model, task and seed; finished runs only."
        )
    if references:
        table.notes.append("Published numbers are not in this table: see the reference table below.")
    return table


def id_comparisons(runs: list[dict[str, Any]], n_boot: int = stats.N_BOOT, seed: int = 0) -> list[list[Comparison]]:
    """The families of the main difference table: per (model, baseline) every other method on every task's
    headline, Holm-corrected within the family."""
    models, tasks, methods = layout(runs)
    baselines = [b for b in BASELINES if any(r["method"] == b for r in runs)]
    by_cell: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in sorted(runs, key=run_rank):
        by_cell.setdefault((r["model"], r["method"], r["task"]), []).append(r)
    families = []
    for model in models:
        for baseline in [b for b in baselines if b in methods[model]]:
            others = [m for m in methods[model] if m != baseline]
            results = {}
            for task in tasks:
                found = stats.paired_differences({m: by_cell.get((model, m, task), []) for m in others},
                                                 by_cell.get((model, baseline, task), []), n_boot=n_boot, seed=seed)  # fmt: skip
                results.update({(model, baseline, m, (task, None)): d for m, d in found.items()})
            families.append(holm_family(results))
    return [f for f in families if f]


def difference_table(runs: list[dict[str, Any]], n_boot: int = stats.N_BOOT, seed: int = 0,
                     families: list[list[Comparison]] | None = None) -> Table | None:  # fmt: skip
    """Method − baseline per task (percentage points): paired t-interval (bold when Holm-significant) and the
    examples' bootstrap; None without a baseline."""
    _, tasks, methods = layout(runs)
    families = id_comparisons(runs, n_boot, seed) if families is None else families
    if not families:
        return None
    baselines = canonical_order({f[0].baseline for f in families}, BASELINES)
    table = Table(f"Differences vs {' and vs '.join(baselines)} (percentage points, 95 % intervals)",
                  ["Model", "Baseline", "Method", "Seeds",
                   *difference_headers([TASK_LABELS.get(t, t) for t in tasks])])  # fmt: skip
    not_bootstrapped, unpaired = [], []
    for family in families:
        table.start_block()
        missing, left = add_difference_rows(table, family, [m for m in methods[family[0].model]
                                                            if m != family[0].baseline], [(t, None) for t in tasks], 3)  # fmt: skip
        not_bootstrapped, unpaired = not_bootstrapped + missing, unpaired + left
    counts = [c.difference.n_seeds for family in families for c in family]
    table.notes += interval_notes(n_boot, seed, "each headline on the task's evaluation subset", counts)
    table.notes += pairing_notes(not_bootstrapped, unpaired)
    return table


def _teacher_scores(record: dict[str, Any], teacher: str) -> dict[str, Any]:
    """``teacher_scores[teacher]`` of a record; {} when the record has none (older records, lp's θ_fine)."""
    scores = (record.get("teacher_scores") or {}).get(teacher)
    return scores if isinstance(scores, dict) else {}


def _teacher_values(group: list[dict[str, Any]], teacher: str, key: str) -> list[float]:
    """``teacher_scores[teacher][key]`` of each record that has it, in percent (as the record's headline)."""
    values = (stats.percent(r, _teacher_scores(r, teacher).get(key)) for r in group)
    return [v for v in values if v is not None]


def _mean_std_text(values: list[float]) -> str:
    if not values:
        return "–"
    s = stats.summary(values)
    return fmt_num(s.mean) + (f" ± {fmt_num(s.std)}" if s.std is not None else "")


def _dev_sources(group: list[dict[str, Any]], teacher: str) -> list[str]:
    """The dev_source of each dev score of ``teacher`` in the group, distinct and sorted."""
    return sorted({str(_teacher_scores(r, teacher).get("dev_source") or "?") for r in group
                   if stats.percent(r, _teacher_scores(r, teacher).get("dev")) is not None})  # fmt: skip


def teacher_table(runs: list[dict[str, Any]]) -> Table | None:
    """θ_pre and θ_fine per (model, task, method) from the records' ``teacher_scores``; None when no record has them."""
    with_scores = [r for r in runs if isinstance(r.get("teacher_scores"), dict)]
    if not with_scores:
        return None
    models, tasks, _ = layout(with_scores)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in sorted(with_scores, key=run_rank):
        groups.setdefault((r["model"], r["task"], r["method"]), []).append(r)
    table = Table(TEACHERS_TITLE, ["Model", "Task", "Method", "n", "θ_pre eval", "θ_pre dev", "θ_fine eval",
                                   "θ_fine dev", "Majority eval", "Majority dev", "Weak θ_pre", "Probe λ"])  # fmt: skip
    other_sources: set[str] = set()

    def dev(group: list[dict[str, Any]], teacher: str) -> str:
        values, sources = _teacher_values(group, teacher, "dev"), _dev_sources(group, teacher)
        if not values:
            return "–"
        other_sources.update(x for x in sources if x != "dev")
        return fmt_num(statistics.fmean(values)) + ("" if sources == ["dev"] else f" ({'/'.join(sources)})")

    def majority(group: list[dict[str, Any]], key: str) -> str:
        values = _teacher_values(group, "pre", key) or _teacher_values(group, "fine", key)  # the same data for both
        return fmt_num(statistics.fmean(values)) if values else "–"

    for model in models:
        table.start_block()
        for task in tasks:
            methods = canonical_order((m for mo, t, m in groups if mo == model and t == task), METHOD_ORDER)
            for method in methods:
                group = groups[(model, task, method)]
                judged = [r["weak_teacher"] for r in group if isinstance(r.get("weak_teacher"), bool)]
                table.add([model, TASK_LABELS.get(task, task), method, str(len(group)),
                           _mean_std_text(_teacher_values(group, "pre", "eval")), dev(group, "pre"),
                           _mean_std_text(_teacher_values(group, "fine", "eval")), dev(group, "fine"),
                           majority(group, "majority_eval"), majority(group, "majority"),
                           f"{sum(judged)}/{len(judged)}" if judged else "–", _probe_l2_text(group)])  # fmt: skip
    table.notes.append(
        "The teachers a method builds, scored on their own (the records' teacher_scores): θ_pre (the linear probe on "
        "the frozen pretrained model; a causal LM as it is) and θ_fine (fine-tuned from θ_pre). eval: on the run's "
        "evaluation subset, mean ± sample std over the n runs that record teacher scores; dev: on held-out data, "
        "mean; – where a run has no such teacher (lp builds no θ_fine) or score. Majority eval / dev: the headline of "
        "the trivial constant predictor on the same data. Weak θ_pre: in k of the n runs that record weak_teacher, "
        "θ_pre's dev headline was ≤ its majority baseline on dev."
    )
    table.notes.append(
        "Probe λ: the L2 strength the linear probe chose from its grid in each run (the record's probe.l2)."
    )
    if other_sources:
        table.notes.append(
            "(cv) after a dev score: cross-validated on the training features instead of scored on a held-out dev "
            "split (the record's dev_source); (dev/cv): some runs each way."
        )
    return table


def _probe_l2_text(group: list[dict[str, Any]]) -> str:
    values = sorted({r["probe"]["l2"] for r in group if isinstance(r.get("probe"), dict) and "l2" in r["probe"]})
    return ", ".join(f"{v:g}" for v in values) if values else "–"


def per_seed_table(runs: list[dict[str, Any]]) -> Table:
    """Every run, one row per (model, method, seed): its score, or its status when it did not finish ok."""
    models, tasks, methods = layout(runs)
    by_key = {(r["model"], r["method"], r["seed"], r["task"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    table = Table(
        "Per seed: headline metric (%), every run", ["Model", "Method", "Seed", *(TASK_LABELS.get(t, t) for t in tasks)]
    )
    failures = []
    marked = False
    for model in models:
        table.start_block()
        for method in methods[model]:
            for seed in seeds:
                row = [by_key.get((model, method, seed, t)) for t in tasks]
                if not any(row):
                    continue
                texts = [_seed_text(r) for r in row]
                marked = marked or any(" ✗" in t or COLLAPSE_SEED_MARK in t for t in texts)
                table.add([model, method, str(seed), *texts])
                failures += [r for r in row if r and r["status"] == "failed"]
    if marked:
        table.notes.append(f"✗: finished ok but failed to learn (headline missing or ≤ the majority baseline); "
                           f"{COLLAPSE_SEED_MARK.strip()}: collapsed (see the main table's note).")  # fmt: skip
    for r in failures:
        err = r.get("error") or {}
        message = str(err.get("message", "")).strip().splitlines()
        table.notes.append(f"failed: {r['model']} {r['method']} seed {r['seed']} {r['task']}: "
                           f"{err.get('type', '?')}: {message[0][:160] if message else ''}")  # fmt: skip
    return table


def _seed_text(record: dict[str, Any] | None) -> str:
    if record is None:
        return "–"
    value = score(record)
    if record["status"] == "ok":
        if value is None:
            return "ok (no score)"
        return (fmt_num(value, 2) + (" ✗" if stats.failed_to_learn(record) else "")
                + (COLLAPSE_SEED_MARK if stats.collapsed(record) else ""))  # fmt: skip
    return record["status"] if value is None else f"{fmt_num(value, 2)} ({record['status']})"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def cost_table(runs: list[dict[str, Any]]) -> Table:
    """What each method cost, over its runs that finished: time per run, peak memory, throughput."""
    models, _, methods = layout(runs)
    table = Table("Cost per run (median over tasks and seeds; runs that finished)",
                  ["Model", "Method", "# Trainable", "# Total", "Runs", "Train s", "Eval s", "Wall s",
                   "Peak MB (max)", "Train samples/s"])  # fmt: skip
    for model in models:
        table.start_block()
        for method in methods[model]:
            done = [r for r in runs if r["model"] == model and r["method"] == method and r["status"] in rec.FINISHED]
            totals = sorted({r["total_params"] for r in done if r.get("total_params")})
            times = [_median([v for r in done for v in [as_number(r.get(k))] if v is not None])
                     for k in ("train_time_s", "eval_time_s", "wall_time_s")]  # fmt: skip
            peaks = [v for r in done for v in [as_number(r.get("peak_memory_mb"))] if v is not None]
            rates = [v for r in done for v in [as_number(r.get("train_samples_per_s"))] if v is not None]
            table.add([model, method, trainable_text(runs, model, method),
                       human_count(totals[-1]) if totals else "–", str(len(done)),
                       *(fmt_num(v) if v is not None else "–" for v in times),
                       fmt_num(max(peaks), 0) if peaks else "–", fmt_num(_median(rates)) if rates else "–"])  # fmt: skip
    table.notes.append("Peak MB: CUDA peak allocated on GPU; – where the run did not measure it (CPU runs record null; "
                       "earlier CPU records carry the peak rise of the process's resident set size). Wall s includes "
                       "model loading and cached-stage lookups.")  # fmt: skip
    return table


def compute_table(runs: list[dict[str, Any]]) -> Table | None:
    """Training compute per method (every stage summed), median over tasks and seeds; None when no run has any."""
    if not any(as_number(r.get(k)) is not None for r in runs for k, _ in COMPUTE_FIELDS):
        return None
    models, _, methods = layout(runs)
    table = Table("Training compute per run (median over tasks and seeds; every training stage summed)",
                  ["Model", "Method", "Runs", *(label for _, label in COMPUTE_FIELDS)])  # fmt: skip
    for model in models:
        table.start_block()
        for method in methods[model]:
            done = [r for r in runs if r["model"] == model and r["method"] == method and r["status"] in rec.FINISHED]
            counted = [r for r in done if any(as_number(r.get(k)) is not None for k, _ in COMPUTE_FIELDS)]
            values = [_median([v for r in counted for v in [as_number(r.get(k))] if v is not None])
                      for k, _ in COMPUTE_FIELDS]  # fmt: skip
            texts = [("–" if v is None else human_flops(v) if k == "train_flops" else human_count(v))
                     for v, (k, _) in zip(values, COMPUTE_FIELDS, strict=True)]  # fmt: skip
            table.add([model, method, str(len(counted)), *texts])
    table.notes.append(
        "As the run records count them (hybridft.compute), summed over every training stage of the method, teacher "
        "stages included (cached ones at their recorded cost): train tokens = non-padding tokens through forward + "
        "backward, forward tokens = through forward-only passes (teacher logits), train FLOPs = the estimate of "
        "hybridft.compute (6·P per token of full fine-tuning, 2·P per forward-only token). Finished runs."
    )
    return table


def compute_match_table(
    runs: list[dict[str, Any]], method: str = "plain_matched", target: str = "hybrid"
) -> Table | None:
    """train_flops of ``method`` ÷ ``target``'s per task (median over seeds); None without such pairs."""
    models, tasks, _ = layout(runs)
    by_task = {(m, t): [] for m in models for t in tasks}
    for model in models:
        base = {(r["task"], r["seed"]): record_flops(r) for r in runs
                if r["model"] == model and r["method"] == target and record_flops(r)}  # fmt: skip
        for r in sorted(runs, key=run_rank):
            if r["model"] == model and r["method"] == method and record_flops(r) and (r["task"], r["seed"]) in base:
                by_task[(model, r["task"])].append(record_flops(r) / base[(r["task"], r["seed"])])
    if not any(by_task.values()):
        return None
    table = Table(f"Compute match: train FLOPs of {method} ÷ {target}, median over seeds",
                  ["Model", "Ratio", *(TASK_LABELS.get(t, t) for t in tasks), "All tasks"])  # fmt: skip
    for model in models:
        per_task = [by_task[(model, t)] for t in tasks]
        every = [x for xs in per_task for x in xs]
        overall = f"{statistics.median(every):.2f} ({min(every):.2f}–{max(every):.2f})" if every else "–"
        table.add([model, f"{method} ÷ {target}", *(f"{statistics.median(xs):.2f}" if xs else "–" for xs in per_task),
                   overall])  # fmt: skip
    table.notes.append(
        f"1.00 = equal estimated training FLOPs at the same model, task and seed. All tasks: median (min–max) over "
        f"every (task, seed) pair. {method} trains {MATCHED_PAIRS.get(method, (target, 'its recipe'))[1]} for as many "
        f"epochs as match {target}'s pipeline."
    )
    return table


def reference_table(references: list[dict[str, Any]], tasks: list[str] | None = None) -> Table:
    """The published rows, with their model, metric notes, source and scores on the tasks run here."""
    tasks = tasks if tasks is not None else canonical_order((t for r in references for t in r["scores"]), TASK_ORDER)
    table = Table("Published reference rows (not run here)",
                  ["Model", "Row", "Reference model", "# Trainable", *(TASK_LABELS.get(t, t) for t in tasks),
                   "Metric notes", "Source"])  # fmt: skip
    for ref in references:
        scores = [ref["scores"].get(t) for t in tasks]
        if not any(s is not None for s in scores):
            continue
        table.add([ref["model"], ref["label"], ref.get("reference_model", ref["model"]),
                   str(ref.get("trainable_params", "–")), *(fmt_num(s) if s is not None else "–" for s in scores),
                   ref.get("metric", ""), ref["source"]])  # fmt: skip
    table.notes.append(
        "Published numbers (bench/references.toml), not run here and kept out of the main table: their model "
        "(Reference model), data, recipe or metric (Metric notes) can differ from ours. Scores in percent as "
        "printed; rows for the models run here with a score on at least one task run here."
    )
    return table


def sweep_table(sweeps: list[dict[str, Any]]) -> Table:
    """WiSE-FT α curves: headline (%) per α, mean over seeds (α = weight of the pretrained teacher)."""
    alphas = sorted({p["alpha"] for r in sweeps if r["status"] == "ok" for p in r.get("curve") or []})
    keys = sorted({(r["model"], r["task"]) for r in sweeps}, key=lambda k: (k[0], task_rank(k[1])))
    table = Table("α sweep (WiSE-FT weight mix, no distillation): headline (%) vs α, mean over seeds",
                  ["Model", "Task", "Seeds", *(f"α={a:g}" for a in alphas)])  # fmt: skip
    for model, task in keys:
        runs = [r for r in sweeps if r["model"] == model and r["task"] == task and r["status"] == "ok"]
        points: dict[float, list[float]] = {}
        for r in runs:
            for p in r.get("curve") or []:
                value = stats.percent(r, p.get("headline"))
                if value is not None:
                    points.setdefault(p["alpha"], []).append(value)
        table.add([model, TASK_LABELS.get(task, task), str(len(runs)),
                   *(fmt_num(statistics.fmean(points[a])) if points.get(a) else "–" for a in alphas)])  # fmt: skip
    return table


def _distinct(records: list[dict[str, Any]], getter) -> list[str]:
    """Distinct non-None values, numbers in numeric order, then text."""
    values = {v for v in (getter(r) for r in records) if v is not None}
    numbers = sorted(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
    return [str(v) for v in numbers] + sorted(str(v) for v in values if v not in numbers)


def _config_field(name: str):
    return lambda r: (r.get("config") or {}).get(name)


def _revision(r: dict[str, Any]) -> str:
    return (r.get("git_revision") or "unknown")[:12] + (" (dirty)" if r.get("git_dirty") else "")


def _versions(r: dict[str, Any]) -> str:
    shown = ("torch", "transformers", "peft", "adapters")
    return ", ".join(f"{k} {v}" for k, v in sorted((r.get("versions") or {}).items()) if k in shown and v)


def header_lines(records: list[dict[str, Any]], offline_notes: dict[str, str]) -> list[str]:
    """The protocol, stated from the records themselves: what ran, on what data, where, from which code."""
    if not records:
        return ["No runs recorded yet."]

    def values(getter) -> str:
        return ", ".join(_distinct(records, getter))

    tasks = canonical_order((r["task"] for r in records), TASK_ORDER)
    lines = [
        f"Profile: {values(lambda r: r.get('profile'))}",
        f"Models: {values(lambda r: r['model'])}",
        f"Tasks: {', '.join(tasks)}",
        f"Seeds: {', '.join(str(s) for s in sorted({r['seed'] for r in records}))}",
        f"Train examples per task: {values(_config_field('train_size')) or 'all'}; "
        f"eval examples: {values(_config_field('eval_size')) or 'all'} (subset of the split, seeded; see records)",
        f"Epochs: {values(_config_field('epochs'))}; batch size: {values(_config_field('batch_size'))}; "
        f"max length: {values(_config_field('max_length'))}",
        f"Hardware: {'; '.join(_distinct(records, lambda r: _hardware_label(r.get('hardware') or {})))}; "
        f"processes per run: {values(lambda r: r.get('world_size', 1))}",
        f"Code: git {values(_revision)}; {'; '.join(_distinct(records, _versions))}",
        f"Runs: {len(records)} ({', '.join(f'{n} {s}' for s, n in _status_counts(records))})",
    ]
    lines += [f"Offline deviation: {offline_notes[t]}" for t in tasks if t in offline_notes]
    return lines


def _status_counts(records: list[dict[str, Any]]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return sorted(counts.items())


def _hardware_label(hw: dict[str, Any]) -> str | None:
    if not hw:
        return None
    if hw.get("gpu"):
        return str(hw["gpu"])
    return f"{hw.get('cpu', '?')} ({hw.get('cpu_count', '?')} cores)"


def load_references(path: Path | None = None) -> list[dict[str, Any]]:
    """Published rows from bench/references.toml (each with model, label, scores, source)."""
    path = path or Path(__file__).resolve().parent / "references.toml"
    if tomllib is None:  # pragma: no cover
        raise RuntimeError("reading references on Python 3.10 needs the 'tomli' package: pip install tomli")
    with path.open("rb") as f:
        return list(tomllib.load(f).get("reference", []))


def build_tables(records: list[dict[str, Any]], references: list[dict[str, Any]] | None = None,
                 families: list[list[Comparison]] | None = None) -> list[Table]:  # fmt: skip
    """Every table for these records, in page order (``families``: the main difference table's, if computed)."""
    runs, sweeps = split_records(records)
    _, tasks, _ = layout(runs)
    refs = [r for r in (references if references is not None else load_references())
            if r["model"] in {x["model"] for x in runs} and any(t in r["scores"] for t in tasks)]  # fmt: skip

    tables = [main_table(runs, refs), difference_table(runs, families=families), teacher_table(runs),
              *shift_tables(runs), per_seed_table(runs), cost_table(runs), compute_table(runs),
              *(compute_match_table(runs, method, target) for method, (target, _) in MATCHED_PAIRS.items())]  # fmt: skip
    if refs:
        tables.append(reference_table(refs, tasks))
    if sweeps:
        tables.append(sweep_table(sweeps))
    return [t for t in tables if t is not None]


SUMMARY_FIELDS = ("task", "model", "method", "n", "mean", "std", "median", "t_low", "t_high", "n_failed_to_learn",
                  "n_collapsed", "n_weak_teacher")  # fmt: skip
DIFFERENCE_FIELDS = ("task", "model", "method", "baseline", "n_pairs", "diff", "t_low", "t_high", "boot_low",
                     "boot_high", "holm_significant")  # fmt: skip


def _csv(fields: tuple[str, ...], rows: list[list[Any]]) -> str:
    """CSV text, numbers to 4 decimals, None empty, booleans true/false: the same records give the same bytes."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return fmt_num(value, 4)
        return str(value)

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    writer.writerows([[cell(v) for v in row] for row in rows])
    return out.getvalue()


def summary_csv(runs: list[dict[str, Any]]) -> str:
    """One row per (task, model, method): the headline over the seeds that finished ok (n, mean, sample std,
    median, the 95 % t-interval of the mean over seeds) and the flag counts over every recorded run."""
    models, tasks, methods = layout(runs)
    grid = cells(runs, teachers=True)
    rows = []
    for task in tasks:
        for model in models:
            for method in methods[model]:
                cell = grid.get((model, method, task))
                if cell is None:
                    continue
                s, t = stats.summary(cell.scores), stats.t_interval(cell.scores)
                rows.append([task, model, method, s.n, s.mean, s.std, s.median, t.low, t.high, cell.not_learned,
                             cell.collapsed, cell.weak_teachers])  # fmt: skip
    return _csv(SUMMARY_FIELDS, rows)


def differences_csv(families: list[list[Comparison]]) -> str:
    """One row per comparison of the main difference table (every task, method and baseline)."""
    rows = []
    for family in families:
        for c in family:
            d = c.difference
            rows.append([c.column[0], c.model, c.method, c.baseline, d.n_seeds, d.diff, d.t_low, d.t_high,
                         d.boot_low, d.boot_high, c.holm_significant])  # fmt: skip
    rows.sort(key=lambda r: (task_rank(r[0]), r[1], BASELINES.index(r[3]) if r[3] in BASELINES else 99,
                             METHOD_ORDER.index(r[2]) if r[2] in METHOD_ORDER else 99, r[2]))  # fmt: skip
    return _csv(DIFFERENCE_FIELDS, rows)


def render(records: list[dict[str, Any]], references: list[dict[str, Any]] | None = None,
           labels: dict[str, Any] | None = None) -> dict[str, str]:  # fmt: skip
    """File name → content, for table.md, table.tex, summary.csv and differences.csv. ``labels``: the folder's
    eval_labels.json (fingerprint → labels), from which classifiers that recorded only per-example correctness get
    their prediction share (bench.stats.attach_labels)."""
    if labels:
        records = stats.attach_labels(records, labels)
    runs, _ = split_records(records)
    families = id_comparisons(runs)
    header = header_lines(records, OFFLINE_NOTES)
    tables = build_tables(records, references, families)
    return {"table.md": render_markdown(header, tables), "table.tex": render_latex(header, tables),
            "summary.csv": summary_csv(runs), "differences.csv": differences_csv(families)}  # fmt: skip


def load_labels(directory: str | Path) -> dict[str, Any] | None:
    """The folder's eval_labels.json (bench.eval_labels), or None when it has none."""
    path = Path(directory) / LABELS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_all(directory: str | Path, *, plots: bool = True) -> list[Path]:
    """Regenerate table.md, table.tex, summary.csv, differences.csv (and the plots) in a results folder from its runs
    files (and its eval_labels.json, if any)."""
    directory = Path(directory)
    records = rec.load_records(directory)
    written = []
    for name, text in render(records, labels=load_labels(directory)).items():
        rec.atomic_write_text(directory / name, text)
        written.append(directory / name)
    if plots and records:
        written += plot_module.write_plots(records, directory)
    return written


def check(directory: str | Path) -> list[str]:
    """Names of generated files that differ from (or are missing next to) what the records regenerate."""
    directory = Path(directory)
    fresh = render(rec.load_records(directory), labels=load_labels(directory))
    return [name for name, text in fresh.items()
            if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tables", description="Tables and plots from DIR/runs*.jsonl.")
    p.add_argument("directory", type=Path, nargs="+",
                   help="results folder(s), each holding runs.jsonl, runs-K-of-N.jsonl or runs.d/")  # fmt: skip
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a generated file (table.md, table.tex, summary.csv, differences.csv) differs",
    )
    p.add_argument("--no-plots", action="store_true", help="tables only")
    args = p.parse_args(argv)
    empty = [d for d in args.directory if not rec.has_records(d)]
    if empty:
        print(f"no runs*.jsonl in {', '.join(map(str, empty))}", file=sys.stderr)
        return 2
    status = 0
    for directory in args.directory:
        if args.check:
            stale = check(directory)
            for name in stale:
                print(f"{directory / name} differs from what {rec.RUNS_GLOB} regenerates", file=sys.stderr)
            print(f"{directory}: " + ("tables are up to date" if not stale else "tables differ"), file=sys.stderr)
            status = max(status, 1 if stale else 0)
            continue
        rec.compile_runs(directory)  # runs.jsonl from the per-run files, if the folder has them
        for path in write_all(directory, plots=not args.no_plots):
            print(path)
    return status


if __name__ == "__main__":
    sys.exit(main())
