"""Tables from a results folder's runs*.jsonl only: `python -m bench.tables DIR [--check]`.

Writes DIR/table.md and DIR/table.tex (and the plots, see bench.plots):
- a protocol header (models, subsets, training settings, offline deviations, hardware, code revision);
- the main table in the layout of the LoRA paper's Table 2: rows = methods with their trainable parameters,
  columns = tasks, headline metric as mean ± sample std over the seeds that finished ok, an average column (only
  for rows with every task), the best mean per column within a model in bold; published reference rows from
  bench/references.toml beside ours for the models they were measured on;
- a per-seed table, where diverged and failed runs are shown (failures listed with their error);
- a cost table (time, peak memory, throughput) and the α-sweep table.

Scores are percentages (0–1 metrics × 100; SQuAD EM/F1 already are). Ordering is canonical (models by name, tasks
and methods in a fixed order, seeds ascending) and nothing reads the clock, so the same records give byte-identical
files. `--check` regenerates in memory and exits 1 when a file on disk differs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import records as rec
from bench.profiles import ALPHA_SWEEP
from bench.render import Table, render_latex, render_markdown

TASK_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli",
              "squad", "squad_v2", "squad_devsplit", "conll2003")  # fmt: skip
TASK_LABELS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
               "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "squad": "SQuAD", "squad_v2": "SQuAD v2",
               "squad_devsplit": "SQuAD-devsplit", "conll2003": "CoNLL-2003"}  # fmt: skip
METHOD_ORDER = ("plain", "adapter", "lora", "hybrid", "hybrid_output", "lp", "lp_ft", "wise_ft", "kd_pre", "kd_fine")
METRIC_LABELS = {"matthews_correlation": "Mcc", "accuracy": "Acc", "pearson": "Pearson", "spearmanr": "Spearman",
                 "f1": "F1", "exact_match": "EM", "overall_f1": "F1", "exact": "EM"}  # fmt: skip
PERCENT_METRIC_MODULES = ("squad",)  # these report percentages already; every other headline is a fraction
OFFLINE_NOTES = {
    "squad_devsplit": "squad_devsplit is not official SQuAD v1.1: the v1.1 dev articles are split by title into a "
    "train part and an evaluation part (SQuAD train is not available offline); its scores are not comparable to "
    "published SQuAD numbers.",
}
TABLE_FILES = ("table.md", "table.tex")


def _order(values: Iterable[str], canonical: tuple[str, ...]) -> list[str]:
    present = set(values)
    return [v for v in canonical if v in present] + sorted(present - set(canonical))


def score(record: dict[str, Any]) -> float | None:
    """The headline in percent, or None when the run has none (failed, or a non-finite value)."""
    value = record.get("headline")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    metric_module = record.get("metric_name") or ("squad" if record["task"].startswith("squad") else "")
    return float(value) * (1.0 if metric_module in PERCENT_METRIC_MODULES else 100.0)


def _num(x: float, digits: int = 1) -> str:
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def human_count(n: int | float) -> str:
    """Parameter counts the way papers print them: 125M, 0.15M, 4.2K, 1.5B."""
    n = float(n)
    for unit, size, floor in (("B", 1e9, 1e9), ("M", 1e6, 1e5), ("K", 1e3, 1e3)):
        if n >= floor:
            value = n / size
            return (
                f"{value:.0f}{unit}" if value >= 100 else f"{value:.1f}{unit}" if value >= 1 else f"{value:.2f}{unit}"
            )
    return f"{n:.0f}"


@dataclass
class Cell:
    """The runs of one (model, method, task): scores of the seeds that finished ok, and how many were recorded."""

    scores: list[float] = field(default_factory=list)
    recorded: int = 0
    statuses: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.scores) if self.scores else None

    def text(self) -> str:
        if not self.scores:
            return "–" if not self.statuses else "/".join(sorted(set(self.statuses)))
        body = _num(self.mean)
        if len(self.scores) > 1:
            body += f" ± {_num(statistics.stdev(self.scores))}"
        if len(self.scores) < self.recorded:
            body += f" ({len(self.scores)}/{self.recorded} ok)"
        return body


def split_records(records: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(ordinary runs, α-sweep runs)."""
    runs = [r for r in records if r.get("kind", "run") != ALPHA_SWEEP and r["method"] != ALPHA_SWEEP]
    sweeps = [r for r in records if r not in runs]
    return runs, sweeps


def layout(runs: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """Canonical models, tasks, and the methods present per model."""
    models = sorted({r["model"] for r in runs})
    tasks = _order((r["task"] for r in runs), TASK_ORDER)
    methods = {m: _order((r["method"] for r in runs if r["model"] == m), METHOD_ORDER) for m in models}
    return models, tasks, methods


def cells(runs: list[dict[str, Any]]) -> dict[tuple[str, str, str], Cell]:
    """(model, method, task) → Cell, over seeds."""
    out: dict[tuple[str, str, str], Cell] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        cell = out.setdefault((r["model"], r["method"], r["task"]), Cell())
        cell.recorded += 1
        value = score(r) if r["status"] == "ok" else None
        if value is not None:
            cell.scores.append(value)
        else:
            cell.statuses.append(r["status"])
    return out


def headline_names(runs: list[dict[str, Any]]) -> dict[str, str]:
    """Task → its headline metric name (as the records state it)."""
    names: dict[str, set[str]] = {}
    for r in runs:
        if r.get("headline_metric"):
            names.setdefault(r["task"], set()).add(r["headline_metric"])
    return {t: "/".join(sorted(METRIC_LABELS.get(x, x) for x in n)) for t, n in names.items()}


def trainable_text(runs: list[dict[str, Any]], model: str, method: str) -> str:
    counts = sorted({r["trainable_params"] for r in runs
                     if r["model"] == model and r["method"] == method and r.get("trainable_params")})  # fmt: skip
    if not counts:
        return "–"
    low, high = human_count(counts[0]), human_count(counts[-1])
    return low if low == high else f"{low}–{high}"


def main_table(runs: list[dict[str, Any]], references: list[dict[str, Any]]) -> Table:
    """LoRA-paper Table 2 layout: methods × tasks, mean ± std, average, best per column (per model) in bold."""
    models, tasks, methods = layout(runs)
    metric = headline_names(runs)
    grid = cells(runs)
    columns = ["Model", "Method", "# Trainable"] + [f"{TASK_LABELS.get(t, t)} ({metric.get(t, '?')})" for t in tasks]
    table = Table("Headline metric (%), mean ± std over seeds", [*columns, "Avg."])
    for model in models:
        table.start_block()
        first = len(table.rows)
        for method in methods[model]:
            row_cells = [grid.get((model, method, t), Cell()) for t in tasks]
            complete = row_cells and all(c.scores and len(c.scores) == c.recorded for c in row_cells)
            avg = _num(statistics.fmean(c.mean for c in row_cells)) if complete else "–"
            table.add([model, method, trainable_text(runs, model, method), *(c.text() for c in row_cells), avg])
        for j, task in enumerate(tasks):
            column = [grid.get((model, m, task), Cell()).mean for m in methods[model]]
            finite = [v for v in column if v is not None]
            if finite:
                best = _num(max(finite))
                for i, v in enumerate(column):
                    if v is not None and _num(v) == best:
                        table.bold.add((first + i, 3 + j))
        for ref in references:
            if ref["model"] == model:
                scores = [ref["scores"].get(t) for t in tasks]
                table.add([model, f"{ref['label']} †", ref.get("trainable_params", "–"),
                           *(_num(s) if s is not None else "–" for s in scores), "–"])  # fmt: skip
    if any(ref["model"] in models for ref in references):
        table.notes.append("† published, not run here; source and metric per row in the reference table below.")
    table.notes.append("Mean over the seeds that finished ok; ± is the sample std (n ≥ 2); (k/n ok) marks cells "
                       "where some seeds diverged or failed (see the per-seed table). Avg. only for rows where every run finished ok.")  # fmt: skip
    return table


def per_seed_table(runs: list[dict[str, Any]]) -> Table:
    """Every run, one row per (model, method, seed): its score, or its status when it did not finish ok."""
    models, tasks, methods = layout(runs)
    by_key = {(r["model"], r["method"], r["seed"], r["task"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    table = Table(
        "Per seed: headline metric (%), every run", ["Model", "Method", "Seed", *(TASK_LABELS.get(t, t) for t in tasks)]
    )
    failures = []
    for model in models:
        table.start_block()
        for method in methods[model]:
            for seed in seeds:
                row = [by_key.get((model, method, seed, t)) for t in tasks]
                if not any(row):
                    continue
                table.add([model, method, str(seed), *(_seed_text(r) for r in row)])
                failures += [r for r in row if r and r["status"] == "failed"]
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
        return _num(value, 2) if value is not None else "ok (no score)"
    return record["status"] if value is None else f"{_num(value, 2)} ({record['status']})"


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
            stats = [_median([float(r[k]) for r in done if isinstance(r.get(k), (int, float))])
                     for k in ("train_time_s", "eval_time_s", "wall_time_s")]  # fmt: skip
            peaks = [float(r["peak_memory_mb"]) for r in done if isinstance(r.get("peak_memory_mb"), (int, float))]
            rates = [float(r["train_samples_per_s"]) for r in done
                     if isinstance(r.get("train_samples_per_s"), (int, float))]  # fmt: skip
            table.add([model, method, trainable_text(runs, model, method),
                       human_count(totals[-1]) if totals else "–", str(len(done)),
                       *(_num(v) if v is not None else "–" for v in stats),
                       _num(max(peaks), 0) if peaks else "–", _num(_median(rates)) if rates else "–"])  # fmt: skip
    table.notes.append("Peak MB: CUDA peak allocated on GPU; on CPU the peak rise of the process's resident set size during the run "
                       "(as run_experiment reports it). Wall s includes model loading and cached-stage lookups.")  # fmt: skip
    return table


def reference_table(references: list[dict[str, Any]]) -> Table:
    """The published rows shown in the main table, with their metric notes and sources."""
    table = Table("Published reference rows (†)", ["Model", "Row", "Reference model", "Metric notes", "Source"])
    for ref in references:
        table.add([ref["model"], ref["label"], ref.get("reference_model", ref["model"]), ref.get("metric", ""),
                   ref["source"]])  # fmt: skip
    return table


def sweep_table(sweeps: list[dict[str, Any]]) -> Table:
    """WiSE-FT α curves: headline (%) per α, mean over seeds (α = weight of the pretrained teacher)."""
    alphas = sorted({p["alpha"] for r in sweeps if r["status"] == "ok" for p in r.get("curve") or []})
    keys = sorted({(r["model"], r["task"]) for r in sweeps}, key=lambda k: (k[0], _task_rank(k[1])))
    table = Table("α sweep (WiSE-FT weight mix, no distillation): headline (%) vs α, mean over seeds",
                  ["Model", "Task", "Seeds", *(f"α={a:g}" for a in alphas)])  # fmt: skip
    for model, task in keys:
        runs = [r for r in sweeps if r["model"] == model and r["task"] == task and r["status"] == "ok"]
        points: dict[float, list[float]] = {}
        for r in runs:
            for p in r.get("curve") or []:
                value = score({**r, "headline": p.get("headline")})
                if value is not None:
                    points.setdefault(p["alpha"], []).append(value)
        table.add([model, TASK_LABELS.get(task, task), str(len(runs)),
                   *(_num(statistics.fmean(points[a])) if points.get(a) else "–" for a in alphas)])  # fmt: skip
    return table


def _task_rank(task: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER), task)


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

    tasks = _order((r["task"] for r in records), TASK_ORDER)
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
    from bench.profiles import tomllib

    path = path or Path(__file__).resolve().parent / "references.toml"
    if tomllib is None:  # pragma: no cover
        raise RuntimeError("reading references on Python 3.10 needs the 'tomli' package: pip install tomli")
    with path.open("rb") as f:
        return list(tomllib.load(f).get("reference", []))


def build_tables(records: list[dict[str, Any]], references: list[dict[str, Any]] | None = None) -> list[Table]:
    """Every table for these records, in page order."""
    runs, sweeps = split_records(records)
    refs = [r for r in (references if references is not None else load_references())
            if r["model"] in {x["model"] for x in runs}]  # fmt: skip
    tables = [main_table(runs, refs), per_seed_table(runs), cost_table(runs)]
    if refs:
        tables.append(reference_table(refs))
    if sweeps:
        tables.append(sweep_table(sweeps))
    return tables


def render(records: list[dict[str, Any]], references: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """File name → content, for table.md and table.tex."""
    header = header_lines(records, OFFLINE_NOTES)
    tables = build_tables(records, references)
    return {"table.md": render_markdown(header, tables), "table.tex": render_latex(header, tables)}


def write_all(directory: str | Path, *, plots: bool = True) -> list[Path]:
    """Regenerate table.md, table.tex (and the plots) in a results folder from its runs files."""
    directory = Path(directory)
    records = rec.load_records(directory)
    written = []
    for name, text in render(records).items():
        rec.atomic_write_text(directory / name, text)
        written.append(directory / name)
    if plots and records:
        from bench import plots as plot_module

        written += plot_module.write_plots(records, directory)
    return written


def check(directory: str | Path) -> list[str]:
    """Names of table files that differ from (or are missing next to) what the records regenerate."""
    directory = Path(directory)
    fresh = render(rec.load_records(directory))
    return [name for name, text in fresh.items()
            if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tables", description="Tables and plots from DIR/runs*.jsonl.")
    p.add_argument("directory", type=Path, help="results folder holding runs.jsonl (or runs-K-of-N.jsonl files)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if table.md/table.tex differ")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    args = p.parse_args(argv)
    if not rec.runs_files(args.directory):
        print(f"no runs*.jsonl in {args.directory}", file=sys.stderr)
        return 2
    if args.check:
        stale = check(args.directory)
        for name in stale:
            print(f"{args.directory / name} differs from what {rec.RUNS_GLOB} regenerates", file=sys.stderr)
        print("tables are up to date" if not stale else "tables differ", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(args.directory, plots=not args.no_plots):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
