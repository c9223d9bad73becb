"""The verdict: every hybrid-family method against its matched baseline, in every committed results folder, from
the records. `python -m bench.readme verdict` splices it into the README (block ``<!-- results:verdict:start -->``)
and `--check` fails when it is stale.

One row per (folder, model, task, comparison) whose two methods both have records:

- hybrid vs plain_matched (plain fine-tuning given the hybrid pipeline's training FLOPs);
- hybrid_lora vs lora_matched;
- hybrid_auto, hybrid_layers, hybrid_adamerging and hybrid_multitask vs plain_matched: plain_matched is sized after
  `hybrid`'s FLOPs, so these rows show their own compute ratio.

Each row: the paired seeds; the in-distribution (ID) mean of each side; the mean over the task's shift sets (OOD;
label-noise sets left out) of each side; the ID difference (method − baseline, percentage points) with its paired
95 % t-interval over seeds (the interval that decides), the two-level bootstrap (seeds, then examples) beside it, and
the OOD difference with its t-interval; the compute ratio (method ÷ baseline training FLOPs, median over the paired
seeds); the flags; and the reading of the ID t-interval. Intervals are unadjusted here: each folder's own difference
table applies Holm's correction within its families (docs/results.md).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench import records as rec
from bench import stats
from bench.methods.matched import LM_HEAD_RULE, LM_HEAD_RULE_KEY
from bench.render import Table, markdown_table
from bench.shift_tables import column_runs, mean_view, shift_sets
from bench.table_core import (
    TASK_LABELS,
    boot_text,
    cells,
    compute_ratios,
    fmt_num,
    split_records,
    t_text,
    task_rank,
)
from bench.tables import load_labels

# (method, baseline): the hybrid family against the baseline that has its compute.
COMPARISONS = (
    ("hybrid", "plain_matched"),
    ("hybrid_lora", "lora_matched"),
    ("hybrid_auto", "plain_matched"),
    ("hybrid_layers", "plain_matched"),
    ("hybrid_adamerging", "plain_matched"),
    ("hybrid_multitask", "plain_matched"),
)
TITLE = "Verdict: the hybrid family against its matched baseline, every committed profile"
COLUMNS = ["Profile", "Model", "Task", "Method vs baseline", "Seeds", "ID mean", "OOD mean", "ID diff [t 95 %]",
           "ID bootstrap", "OOD diff [t 95 %]", "Compute ratio", "Flags", "Reading"]  # fmt: skip
PROBE_STAGE = "lp"  # a run whose θ_pre is a linear-probed encoder has this stage; since the probe fix its record
# also carries the probe's fit ("probe"), so a record with the stage and without the fit predates the check that
# θ_pre learned (it was then a constant predictor)


def results_folders(root: Path) -> list[Path]:
    """The committed results folders under ``root`` that hold records, in name order."""
    return sorted(p for p in root.iterdir() if p.is_dir() and rec.has_records(p)) if root.is_dir() else []


def load_runs(directory: Path) -> list[dict[str, Any]]:
    """The folder's runs (α sweeps left out), with the prediction shares its eval_labels.json gives."""
    records, labels = rec.load_records(directory), load_labels(directory)
    return split_records(stats.attach_labels(records, labels) if labels else records)[0]


def _means(runs: list[dict[str, Any]]) -> float | None:
    values = [v for r in runs if r["status"] == "ok" for v in [stats.headline_percent(r)] if v is not None]
    return statistics.fmean(values) if values else None


def _pair_text(mine: float | None, base: float | None) -> str:
    if mine is None or base is None:
        return "–"
    return f"{fmt_num(mine)} vs {fmt_num(base)}"


def _flags(side: list[dict[str, Any]], model: str, task: str, method: str, baseline: str) -> str:
    """The flags of both sides (``side``: the runs of this model and task): failed to learn, collapsed, weak θ_pre,
    θ_pre unchecked, an LM baseline sized by the old head count, uncommitted code."""
    found = cells(side, teachers=True)
    out = []
    for name in (method, baseline):
        cell = found.get((model, name, task))
        if cell is None:
            continue
        if cell.not_learned:
            out.append(f"{name} failed to learn {cell.not_learned}/{cell.recorded}")
        if cell.collapsed:
            out.append(f"{name} collapsed {cell.collapsed}/{cell.recorded}")
        if cell.weak_teachers:
            out.append(f"{name} weak θ_pre {cell.weak_teachers}/{cell.teachers_judged}")
    mine = [r for r in side if r["method"] == method and r["status"] == "ok"]
    unchecked = [
        r for r in mine if "probe" not in r and any(s.get("stage") == PROBE_STAGE for s in r.get("stages") or ())
    ]
    if unchecked:
        out.append(f"θ_pre unchecked {len(unchecked)}/{len(mine)} (records predate the probe fix)")
    base_ok = [r for r in side if r["method"] == baseline and r["status"] == "ok"]
    old_rule = [r for r in base_ok if r.get("task_kind") == "causal_lm"
                and (r.get("method_extra") or {}).get(LM_HEAD_RULE_KEY) != LM_HEAD_RULE]  # fmt: skip
    if old_rule:
        out.append(f"{baseline} sized by the old LM-head count {len(old_rule)}/{len(base_ok)} (head at every "
                   f"position for plain)")  # fmt: skip
    dirty = [r for r in side if r["method"] in (method, baseline) and r.get("git_dirty")]
    if dirty:
        out.append(f"uncommitted code {len(dirty)}")
    return "; ".join(out) or "–"


def _reading(d: stats.Difference | None) -> str:
    if d is None:
        return "no paired seed"
    if d.t_low is None:
        return "1 seed: undecided"
    if d.t_low > 0:
        return "ahead"
    if d.t_high < 0:
        return "behind"
    return "not resolved"


def _ratio_text(ratios: list[float]) -> str:
    if not ratios:
        return "–"
    low, mid, high = min(ratios), statistics.median(ratios), max(ratios)
    return f"{mid:.2f}×" if high - low < 0.005 else f"{mid:.2f}× ({low:.2f}–{high:.2f})"


def _ood(runs: list[dict[str, Any]], model: str, task: str, method: str, baseline: str):
    """(method OOD mean, baseline OOD mean, paired difference) over the task's shift sets, or Nones."""
    names = shift_sets(runs, task)[0]
    if not names:
        return None, None, None
    views = [v for r in runs if r["model"] == model and r["task"] == task for v in [mean_view(r, names)]
             if v is not None]  # fmt: skip
    mine = _means([v for v in views if v["method"] == method])
    base = _means([v for v in views if v["method"] == baseline])
    per_set = {n: [r for r in column_runs(runs, task, n) if r["model"] == model] for n in names}
    diff = stats.paired_mean_difference([[r for r in per_set[n] if r["method"] == method] for n in names],
                                        [[r for r in per_set[n] if r["method"] == baseline] for n in names])  # fmt: skip
    return mine, base, diff


def folder_rows(directory: Path, name: str | None = None) -> list[list[str]]:
    """The verdict rows of one results folder (``name``: the profile column, default the folder's name)."""
    runs = load_runs(directory)
    present = {(r["model"], r["task"], r["method"]) for r in runs}
    rows = []
    for model in sorted({r["model"] for r in runs}):
        for task in sorted({r["task"] for r in runs if r["model"] == model}, key=task_rank):
            for method, baseline in COMPARISONS:
                if (model, task, method) not in present or (model, task, baseline) not in present:
                    continue
                side = [r for r in runs if r["model"] == model and r["task"] == task]
                mine = [r for r in side if r["method"] == method]
                base = [r for r in side if r["method"] == baseline]
                diff = stats.paired_difference(mine, base)
                ood_mine, ood_base, ood_diff = _ood(runs, model, task, method, baseline)
                ratios = compute_ratios([r for r in side if r["method"] in (method, baseline)], model, method, baseline)
                rows.append([name or directory.name, model, TASK_LABELS.get(task, task), f"{method} vs {baseline}",
                             str(diff.n_seeds if diff else 0), _pair_text(_means(mine), _means(base)),
                             _pair_text(ood_mine, ood_base), t_text(diff), boot_text(diff), t_text(ood_diff),
                             _ratio_text(ratios), _flags(side, model, task, method, baseline), _reading(diff)])  # fmt: skip
    return rows


def verdict_table(root: Path) -> Table:
    """The verdict over every results folder under ``root`` (ValueError naming it when none holds records)."""
    folders = results_folders(root)
    if not folders:
        raise ValueError(f"no results folder with records under {root}; expected {root}/<profile>/runs.jsonl")
    table = Table(TITLE, COLUMNS)
    for directory in folders:
        rows = folder_rows(directory, directory.relative_to(root).as_posix())
        if rows:
            table.start_block()
        for row in rows:
            table.add(row)
    table.notes += [
        "ID / OOD mean: the headline (%) of method vs baseline, mean over the seeds that finished ok; OOD: the mean "
        "over the task's shift sets (bench.shift; label-noise sets left out), – where the profile scored none.",
        "ID diff: method − baseline in percentage points over the paired seeds, with the paired 95 % Student "
        "t-interval over the per-seed differences; this interval decides (unadjusted here; each folder's difference "
        "table applies Holm's correction). ID bootstrap: seeds, then evaluation examples, 95 % percentile; it shows "
        "the examples' uncertainty and does not decide. OOD diff: the same t-interval on the shift-set mean.",
        "Compute ratio: the method's training FLOPs ÷ the baseline's at the same seed (teacher stages and passes "
        "included), median (range); plain_matched and lora_matched are sized after hybrid's and hybrid_lora's "
        "FLOPs, so the other hybrid variants cost what this column says.",
        "Flags: runs that failed to learn (at or below the majority baseline) or collapsed (one class for nearly "
        "every example), a weak θ_pre (at or below its majority baseline on dev), records made before the probe "
        "fix (θ_pre then a constant predictor: the row tests a broken recipe), a causal LM's matched baseline sized "
        "before every LM pass counted its head on the loss rows only (hybridft.compute; it then trained short of "
        "the hybrid pipeline's compute), and records from uncommitted code.",
        "Reading: ahead / behind where the ID t-interval excludes 0, else not resolved.",
    ]
    return table


def render(root: Path) -> str:
    """The verdict as Markdown (title, table, notes)."""
    return markdown_table(verdict_table(root)).rstrip("\n")
