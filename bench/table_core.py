"""The building blocks of every results table: the canonical orders and labels, a cell's statistics over seeds
(`Cell`), the records' layout, number formatting, and the rows of a difference table (t and bootstrap intervals,
Holm families). `bench.tables` assembles the pages from these; `bench.shift_tables` and `bench.plots` use them too.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import t as t_dist

from bench import records as rec
from bench import stats
from bench.profiles import ALPHA_SWEEP
from bench.render import Table

TASK_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli",
              "squad", "squad_v2", "squad_devsplit", "conll2003", "sst2_lm", "squad_lm", "gsm8k_lm")  # fmt: skip
TASK_LABELS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
               "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "squad": "SQuAD", "squad_v2": "SQuAD v2",
               "squad_devsplit": "SQuAD-devsplit", "conll2003": "CoNLL-2003", "sst2_lm": "SST-2 (LM)",
               "squad_lm": "SQuAD-devsplit (LM)", "gsm8k_lm": "GSM8K (LM)"}  # fmt: skip
METHOD_ORDER = ("plain", "plain_matched", "adapter", "lora", "lora_matched", "hybrid", "hybrid_lora", "hybrid_output",
                "lp", "lp_ft", "wise_ft", "kd_pre", "kd_fine", "plain_multitask", "hybrid_multitask",
                "zero_shot")  # fmt: skip
BASELINES = ("plain", "plain_matched", "lora_matched")  # the methods the difference table compares against
# Compute-matched baseline → the pipeline it is sized after, and what it trains (the compute-match tables).
MATCHED_PAIRS = {"plain_matched": ("hybrid", "plain fine-tuning"), "lora_matched": ("hybrid_lora", "LoRA")}
METRIC_LABELS = {"matthews_correlation": "Mcc", "accuracy": "Acc", "pearson": "Pearson", "spearmanr": "Spearman",
                 "spearman": "Spearman", "f1": "F1", "exact_match": "EM", "overall_f1": "F1", "exact": "EM"}  # fmt: skip
SPLIT_LABELS = {"validation_mismatched": "mm", "validation_matched": "m"}  # extra evaluation splits, short
PERCENT_METRIC_MODULES = stats.PERCENT_METRIC_MODULES  # these report percentages already; others are fractions
OFFLINE_NOTES = {
    "squad_devsplit": "squad_devsplit is not official SQuAD v1.1: the v1.1 dev articles are split by title into a "
    "train part and an evaluation part (SQuAD train is not available offline); its scores are not comparable to "
    "published SQuAD numbers.",
    "squad_lm": "squad_lm is squad_devsplit as answer generation by a causal LM (greedy decoding, SQuAD's EM/F1 "
    "normalisation); not comparable to published SQuAD numbers either.",
    "sst2_lm": "sst2_lm is SST-2 with verbalised labels for a causal LM, scored by comparing the log-likelihoods of "
    "the two label words after the prompt (no generation).",
    "gsm8k_lm": "gsm8k_lm trains on MetaMathQA and scores the GSM8K test split by greedy chain-of-thought generation "
    "(the first number after the last 'The answer is' or '####', else the last number), after PEFT's method "
    "comparison, which scores an answer without such a phrase wrong.",
}
TABLE_FILES = ("table.md", "table.tex", "summary.csv", "differences.csv")
COMPUTE_FIELDS = (("train_tokens", "Train tokens"), ("forward_tokens", "Forward tokens"),
                  ("optimizer_steps", "Optimizer steps"), ("train_flops", "Train FLOPs"))  # fmt: skip
MAIN_TITLE = "Headline metric (%), mean ± std over seeds"
TEACHERS_TITLE = "Teachers: headline (%) of θ_pre and θ_fine on dev and on the evaluation subset, over seeds"
WEAK_MARK = "θ↓"  # a cell's weak-teacher count: θ_pre at or below its majority baseline on dev
COLLAPSE_SEED_MARK = " (collapsed)"  # a per-seed cell of a collapsed run
COLLAPSED_MARK = "⚠collapsed "  # a cell's collapsed count (bench.stats.collapsed); plain ⚠ is failed to learn
FLAG_NOTE = (
    "Two ⚠ marks, counted apart: ⚠k/n = k of the n recorded runs failed to learn (headline missing or ≤ the "
    "majority baseline; runs that diverged or failed count too); ⚠collapsed k/n = k of the n runs collapsed: a "
    "regression whose predictions barely vary (sd(prediction) ÷ sd(label) < 0.1 on the evaluation rows), or a "
    "classifier that predicts one class far beyond its share ((s − q) ÷ (1 − q) > 0.85, s = the most-predicted "
    "class's share of the evaluation rows, q = its true share). A run can be both. Flagged runs stay in the means "
    "and in the seed pairing."
)


def canonical_order(values: Iterable[str], canonical: tuple[str, ...]) -> list[str]:
    present = set(values)
    return [v for v in canonical if v in present] + sorted(present - set(canonical))


def score(record: dict[str, Any]) -> float | None:
    """The headline in percent, or None when the run has none (failed, or a non-finite value)."""
    return stats.headline_percent(record)


def split_score(record: dict[str, Any], split: str) -> float | None:
    """The headline metric on an extra evaluation split (``extra_metrics[split]``) in percent, or None."""
    metrics = (record.get("extra_metrics") or {}).get(split) or {}
    return stats.percent(record, metrics.get(record.get("headline_metric")))


def fmt_num(x: float, digits: int = 1) -> str:
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"


def fmt_signed(x: float, digits: int = 1) -> str:
    text = f"{x:+.{digits}f}"
    return "0." + "0" * digits if float(text) == 0 else text  # no "+0.0" / "-0.0"


def as_number(value: Any) -> float | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)


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


def human_flops(x: float) -> str:
    """FLOPs in scientific notation with two significant digits: 1.2e15, 3.0e9, 0."""
    if x <= 0:
        return "0"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


@dataclass
class Cell:
    """The runs of one (model, method, column): scores of the seeds that finished ok, how many were recorded, how
    many of those failed to learn, and of the runs that record ``weak_teacher`` how many had a weak θ_pre."""

    scores: list[float] = field(default_factory=list)
    recorded: int = 0
    statuses: list[str] = field(default_factory=list)
    not_learned: int = 0
    collapsed: int = 0
    collapse_unjudged: int = 0  # ok runs whose collapse cannot be judged (prediction share not recorded)
    weak_teachers: int = 0
    teachers_judged: int = 0

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.scores) if self.scores else None

    def text(self) -> str:
        if not self.scores:
            return "–" if not self.statuses else "/".join(sorted(set(self.statuses)))
        s = stats.summary(self.scores)
        body = fmt_num(s.mean)
        if s.std is not None:
            body += f" ± {fmt_num(s.std)}"
        if s.n >= 3:  # for n ≤ 2 the median is the mean
            body += f" (med {fmt_num(s.median)})"
        if len(self.scores) < self.recorded:
            body += f" ({len(self.scores)}/{self.recorded} ok)"
        if self.not_learned:
            body += f" ⚠{self.not_learned}/{self.recorded}"
        if self.collapsed:
            body += f" {COLLAPSED_MARK}{self.collapsed}/{self.recorded}"
        if self.weak_teachers:
            body += f" {WEAK_MARK}{self.weak_teachers}/{self.teachers_judged}"
        return body


def split_records(records: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(ordinary runs, α-sweep runs)."""
    runs = [r for r in records if r.get("kind", "run") != ALPHA_SWEEP and r["method"] != ALPHA_SWEEP]
    sweeps = [r for r in records if r not in runs]
    return runs, sweeps


def layout(runs: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """Canonical models, tasks, and the methods present per model."""
    models = sorted({r["model"] for r in runs})
    tasks = canonical_order((r["task"] for r in runs), TASK_ORDER)
    methods = {m: canonical_order((r["method"] for r in runs if r["model"] == m), METHOD_ORDER) for m in models}
    return models, tasks, methods


def cells(
    runs: list[dict[str, Any]], split: str | None = None, *, teachers: bool = False
) -> dict[tuple[str, str, str], Cell]:
    """(model, method, task) → Cell over seeds: of the headline, or of an extra evaluation split's headline metric
    (failed-to-learn marks only for the headline: the majority baseline is measured on its split; with
    ``teachers``, the weak-teacher counts too, over the runs whose record has a boolean ``weak_teacher``)."""
    out: dict[tuple[str, str, str], Cell] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        value = None if r["status"] != "ok" else score(r) if split is None else split_score(r, split)
        if split is not None and value is None and r["status"] == "ok":
            continue  # this run was not evaluated on that split
        cell = out.setdefault((r["model"], r["method"], r["task"]), Cell())
        cell.recorded += 1
        if value is not None:
            cell.scores.append(value)
        else:
            cell.statuses.append(r["status"])
        if split is None and stats.failed_to_learn(r):
            cell.not_learned += 1
        if split is None:
            flag = stats.collapsed(r)
            cell.collapsed += bool(flag)
            cell.collapse_unjudged += flag is None and r["status"] == "ok" and stats.judges_collapse(r)
        if split is None and teachers and isinstance(r.get("weak_teacher"), bool):
            cell.teachers_judged += 1
            cell.weak_teachers += r["weak_teacher"]
    return out


def headline_names(runs: list[dict[str, Any]]) -> dict[str, str]:
    """Task → its headline metric name (as the records state it)."""
    names: dict[str, set[str]] = {}
    for r in runs:
        if r.get("headline_metric"):
            names.setdefault(r["task"], set()).add(r["headline_metric"])
    return {t: "/".join(sorted(METRIC_LABELS.get(x, x) for x in n)) for t, n in names.items()}


def score_columns(runs: list[dict[str, Any]], tasks: list[str]) -> list[tuple[str, str | None]]:
    """(task, None) for each task's headline, each followed by (task, split) for its extra evaluation splits."""
    columns: list[tuple[str, str | None]] = []
    for task in tasks:
        columns.append((task, None))
        splits = {s for r in runs if r["task"] == task for s in (r.get("extra_metrics") or {})
                  if split_score(r, s) is not None}  # fmt: skip
        columns += [(task, s) for s in sorted(splits)]
    return columns


def column_label(task: str, split: str | None, metric: dict[str, str]) -> str:
    name = TASK_LABELS.get(task, task) + ("" if split is None else f"-{SPLIT_LABELS.get(split, split)}")
    return f"{name} ({metric.get(task, '?')})"


def trainable_text(runs: list[dict[str, Any]], model: str, method: str) -> str:
    counts = sorted({r["trainable_params"] for r in runs
                     if r["model"] == model and r["method"] == method and r.get("trainable_params")})  # fmt: skip
    if not counts:
        return "–"
    low, high = human_count(counts[0]), human_count(counts[-1])
    return low if low == high else f"{low}–{high}"


def record_flops(r: dict[str, Any]) -> float | None:
    value = as_number(r.get("train_flops"))
    return value if r["status"] in rec.FINISHED and value is not None and value > 0 else None


def compute_ratios(runs: list[dict[str, Any]], model: str, method: str, baseline: str = "plain") -> list[float]:
    """train_flops ÷ the baseline's at the same (model, task, seed), over the finished runs that have both."""
    base = {(r["task"], r["seed"]): record_flops(r) for r in runs
            if r["model"] == model and r["method"] == baseline and record_flops(r)}  # fmt: skip
    return [record_flops(r) / base[(r["task"], r["seed"])] for r in sorted(runs, key=run_rank)
            if r["model"] == model and r["method"] == method and record_flops(r) and (r["task"], r["seed"]) in base]  # fmt: skip


def run_rank(r: dict[str, Any]) -> tuple:
    return (r["model"], task_rank(r["task"]), r["seed"], r["method"])


def majority_scores(runs: list[dict[str, Any]], model: str, task: str) -> float | None:
    """The trivial constant predictor's headline (percent) on the task's evaluation subset, mean over the runs."""
    values = [v for r in runs if r["model"] == model and r["task"] == task
              for v in [stats.percent(r, r.get("majority_baseline"))] if v is not None]  # fmt: skip
    return statistics.fmean(values) if values else None


def t_text(d: stats.Difference | None) -> str:
    """A difference with its paired t-interval: "+1.5 [-0.4, +3.6]"; one seed: no interval."""
    if d is None:
        return "–"
    if d.t_low is None:
        return f"{fmt_signed(d.diff)} (1 seed: no interval)"
    return f"{fmt_signed(d.diff)} [{fmt_signed(d.t_low)}, {fmt_signed(d.t_high)}]"


def boot_text(d: stats.Difference | None) -> str:
    """The bootstrap interval over seeds and examples; "(per seed)" where examples were drawn per seed."""
    if d is None or d.boot_low is None:
        return "–"
    return f"[{fmt_signed(d.boot_low)}, {fmt_signed(d.boot_high)}]" + (
        " (per seed)" if d.draw == stats.PER_SEED else ""
    )


@dataclass(frozen=True)
class Comparison:
    """One difference of a difference table: a method against a baseline in one column (task, split or set)."""

    model: str
    baseline: str
    method: str
    column: tuple[str, str | None]
    difference: stats.Difference
    holm_significant: bool


def baseline_blocks(table: Table, models: list[str], methods: dict[str, list[str]], baselines: list[str]):
    """(model, baseline, the other methods) for each model that ran each baseline, each starting a table block."""
    for model in models:
        for baseline in baselines:
            if baseline in methods[model]:
                table.start_block()
                yield model, baseline, [m for m in methods[model] if m != baseline]


def holm_family(results: dict[tuple, stats.Difference | None]) -> list[Comparison]:
    """Comparisons of one family (one table, one model, one baseline: keys (model, baseline, method, column)) with
    Holm's correction over every comparison in it that has a t-interval."""
    keys = [k for k, d in results.items() if d is not None]
    marks = stats.holm([results[k].p_value for k in keys])
    return [Comparison(*k, results[k], mark) for k, mark in zip(keys, marks, strict=True)]


def add_difference_rows(table: Table, family: list[Comparison], methods: list[str], columns: list[tuple],
                        first: int) -> tuple[list[str], list[str]]:  # fmt: skip
    """One row per method that has a comparison: per column its t-interval cell (bold when Holm-significant) and
    its bootstrap cell, from column ``first`` on. Returns the notes of its cells: (why a cell has no bootstrap, which
    runs a cell left unpaired)."""
    found = {(c.method, c.column): c for c in family}
    not_bootstrapped, unpaired = [], []
    for method in methods:
        row = [found.get((method, col)) for col in columns]
        if all(c is None for c in row):
            continue  # no seed finished ok for both
        n_seeds = sorted({c.difference.n_seeds for c in row if c is not None})
        seeds = str(n_seeds[0]) if len(n_seeds) == 1 else f"{n_seeds[0]}–{n_seeds[-1]}"
        cells_ = []
        for j, c in enumerate(row):
            d = c.difference if c is not None else None
            if c is not None and c.holm_significant:
                table.bold.add((len(table.rows), first + 1 + 2 * j))
            if d is not None and d.note:
                not_bootstrapped.append(d.note)
            if d is not None and d.unpaired:
                unpaired.append(f"{method} vs {c.baseline}, {column_text(c.column)}: paired on seeds both finished "
                                f"ok; left out: {', '.join(d.unpaired)}")  # fmt: skip
            cells_ += [t_text(d), boot_text(d)]
        table.add([family[0].model, family[0].baseline, method, seeds, *cells_])
    return not_bootstrapped, unpaired


def pairing_notes(not_bootstrapped: list[str], unpaired: list[str]) -> list[str]:
    """A difference table's notes on its cells (`add_difference_rows`), each said once, in first-seen order."""
    return [f"Not bootstrapped: {n}" for n in dict.fromkeys(not_bootstrapped)] + [
        f"Unpaired: {n}" for n in dict.fromkeys(unpaired)]  # fmt: skip


def column_text(column: tuple[str, str | None]) -> str:
    task, part = column
    return TASK_LABELS.get(task, task) + ("" if part is None else f" {part}")


def difference_headers(labels: list[str]) -> list[str]:
    """Two columns per difference column: the t-interval and the examples' bootstrap."""
    return [x for label in labels for x in (f"{label} t-interval", f"{label} bootstrap (examples)")]


def seeds_text(counts: Iterable[int]) -> str:
    """How wide a t-interval is at the seed counts of a table: "with 5 seeds … (t = 2.78 with 4 degrees of freedom)"."""
    counts = sorted({n for n in counts if n >= 2})
    if not counts:
        return "no cell has 2 seeds, so there is no interval"
    parts = [f"t = {float(t_dist.ppf(0.975, n - 1)):.2f} with {n - 1} degree{'s' if n > 2 else ''} of freedom at {n} "
             f"seeds" for n in counts]  # fmt: skip
    return "; ".join(parts)


def interval_notes(n_boot: int, seed: int, what: str, counts: Iterable[int] = ()) -> list[str]:
    """The notes every difference table carries: which interval decides, what the bootstrap is, what bold means;
    ``counts``: the numbers of paired seeds in the table, for the t quantile they give."""
    return [
        f"Method − baseline: the mean over the seeds both finished ok of the per-seed difference of the headline "
        f"(percentage points; {what}). t-interval: the 95 % Student t-interval over those per-seed differences, "
        f"the interval that decides ({seeds_text(counts)}), and a cell with 1 seed has none.",
        f"bootstrap (examples): the examples' uncertainty, the 95 % percentile interval of a two-level paired "
        f"bootstrap ({n_boot} resamples, numpy default_rng seed {seed}): seeds drawn with replacement (the same for "
        f"both methods), then the evaluation examples drawn with replacement, the same for both methods and, where "
        f"the runs share one evaluation subset (the same fingerprint), one draw for every seed; (per seed): the "
        f"subsets differ between seeds, so each seed's examples are drawn on their own. It does not decide: with a "
        f"handful of seeds a percentile bootstrap over seeds covers well below 95 % (74 % at 3 seeds and 83 % at 5 in "
        f"tests/bench/test_stats_coverage.py's simulation).",
        "Bold: the t-interval excludes 0 after Holm's correction over every comparison in this table against that "
        "baseline for that model (family-wise 5 %). Unbolded differences are not findings.",
    ]


def task_rank(task: str) -> tuple[int, str]:
    return (TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER), task)
