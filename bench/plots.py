"""Plots from the records (matplotlib, Agg): score vs. parameters and vs. compute, loss curves, α-sweep curves.

DIR/params_vs_score.png   one panel per task: headline (%) vs. trainable parameters (log x), a point per
                          (model, method) with the spread over seeds as an error bar
DIR/score_vs_flops.png    one panel per task: mean headline (%) over the seeds that finished ok vs. their mean
                          train_flops (log x; every training stage summed), a point per (model, method) with the
                          seed std as an error bar, and per model the Pareto front (the points that no other point
                          beats with at most its compute and a higher score, or less compute and at least its
                          score) as a dashed step line
DIR/loss_curves.png       one panel per task: training loss vs. optimizer step of each method's own (last) training
                          stage, from the lowest seed that recorded ``curves`` (not a mean over seeds: seeds need
                          not log the same steps); one colour per method, one line style per model. Earlier stages
                          (the LP / LP-FT teachers) are not drawn. The last stage is the last of the record's
                          ``stages`` list that has a curve; without that list, the curve named like the method,
                          else the last of lp, teacher_logits, lp_ft (runs.jsonl stores the ``curves`` dict with
                          sorted keys, so its key order is not the stage order)
DIR/alpha_sweep.png       one panel per task: headline (%) vs. α (weight of the pretrained model in the WiSE-FT
                          mix), mean over seeds, a line per model
DIR/effective_robustness.png  one panel per task with shift sets (WiSE-FT's figure): ID headline (x) vs. the mean
                          over the task's shift sets (y), a point per (model, method) with seed-std error bars both
                          ways; where the records hold them, the α curves: the WiSE-FT sweep (no distillation, from
                          `alpha_sweep` records, α = 0 … 1) and the hybrid α grid (hybrid runs at several α, with
                          distillation), mean over seeds, each point labelled with its α
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from bench import records as rec
from bench.shift_tables import shift_sets
from bench.table_core import METHOD_ORDER, TASK_LABELS, cells, layout, score, split_records
from hybridft.methods.hybrid import HybridConfig

STAGE_ORDER = ("lp", "teacher_logits", "lp_ft")  # known stages before a method's own, in pipeline order
_LINESTYLES = ("-", "--", ":", "-.")

_PNG_METADATA = {"Software": None}  # no matplotlib version stamp: same records → same bytes on one install


def _grid(n: int):
    import matplotlib  # noqa: PLC0415  heavy optional: matplotlib (the bench extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  heavy optional: matplotlib

    cols = min(4, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, list(axes.flat[:n])


def _method_index(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER) + sum(map(ord, method))


def _point(ax, x: float, y: float, err: float, marker: str, method: str) -> None:
    """One method's mean with its seed spread, in the method's colour (the same across panels and models)."""
    ax.errorbar([x], [y], yerr=[err], fmt=marker, color=f"C{_method_index(method) % 10}", capsize=2)
    ax.annotate(method, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")


def _label(ax, task: str, xlabel: str, ylabel: str = "headline (%)") -> None:
    ax.set_title(TASK_LABELS.get(task, task), fontsize=9)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(which="both", labelsize=6)


def _save(plt, fig, path: Path, title: str) -> Path:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=_PNG_METADATA)
    plt.close(fig)
    return path


def params_vs_score(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Headline vs. trainable parameters per task; None when no run has both."""
    models, tasks, methods = layout(runs)
    grid = cells(runs)
    trainable = {(r["model"], r["method"], r["task"]): r["trainable_params"] for r in runs if r.get("trainable_params")}
    if not any(c.scores for c in grid.values()):
        return None
    plt, fig, axes = _grid(len(tasks))
    markers = "os^Dv<>pPX*h"
    for ax, task in zip(axes, tasks, strict=True):
        for mi, model in enumerate(models):
            for method in methods[model]:
                cell, x = grid.get((model, method, task)), trainable.get((model, method, task))
                if not cell or not cell.scores or not x:
                    continue
                err = statistics.stdev(cell.scores) if len(cell.scores) > 1 else 0.0
                _point(ax, x, cell.mean, err, markers[mi % len(markers)], method)
        ax.set_xscale("log")
        _label(ax, task, "trainable parameters")
    return _save(plt, fig, path, "Score vs. trainable parameters (" + ", ".join(models) + ")")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices (by ascending compute) of the (compute, score) points no other point dominates: none has compute
    <= and score >= with one of them strict. Equal points are all kept."""
    front = [i for i, (x, y) in enumerate(points)
             if not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for x2, y2 in points)]  # fmt: skip
    return sorted(front, key=lambda i: (points[i][0], -points[i][1], i))


def _mean_flops(runs: list[dict[str, Any]]) -> float | None:
    values = [float(r["train_flops"]) for r in runs if isinstance(r.get("train_flops"), (int, float))
              and not isinstance(r.get("train_flops"), bool) and r["train_flops"] > 0]  # fmt: skip
    return statistics.fmean(values) if values else None


def score_vs_flops(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Mean headline vs. mean train_flops per task, with each model's Pareto front; None when no run has both."""
    models, tasks, methods = layout(runs)
    grid = cells(runs)
    points: dict[tuple[str, str], list[tuple[float, float, float, str]]] = {}  # (task, model) → (x, y, err, method)
    for task in tasks:
        for model in models:
            for method in methods[model]:
                cell = grid.get((model, method, task))
                ok = [r for r in runs if (r["model"], r["method"], r["task"]) == (model, method, task)
                      and r["status"] == "ok" and score(r) is not None]  # fmt: skip
                x = _mean_flops(ok)
                if cell and cell.scores and x:
                    err = statistics.stdev(cell.scores) if len(cell.scores) > 1 else 0.0
                    points.setdefault((task, model), []).append((x, cell.mean, err, method))
    if not points:
        return None
    plt, fig, axes = _grid(len(tasks))
    markers = "os^Dv<>pPX*h"
    for ax, task in zip(axes, tasks, strict=True):
        for mi, model in enumerate(models):
            found = points.get((task, model), [])
            for x, y, err, method in found:
                _point(ax, x, y, err, markers[mi % len(markers)], method)
            front = [found[i] for i in pareto_front([(x, y) for x, y, _, _ in found])]
            if len(front) > 1:
                ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.4",
                        linestyle=_LINESTYLES[1], linewidth=0.8)  # fmt: skip
        ax.set_xscale("log")
        _label(ax, task, "train FLOPs (all stages)")
    return _save(plt, fig, path, "Score vs. training compute, Pareto front dashed (" + ", ".join(models) + ")")


def last_stage(record: dict[str, Any]) -> str | None:
    """The method's own (last) training stage among the record's ``curves`` (see the module docstring)."""
    curves = record.get("curves") or {}
    stages = [s for s, points in curves.items() if points]
    if not stages:
        return None
    ordered = [s.get("stage") for s in record.get("stages") or [] if isinstance(s, dict)]
    ordered = [s for s in ordered if s in stages]
    if ordered:
        return ordered[-1]
    if record["method"] in stages:
        return record["method"]
    unknown = sorted(s for s in stages if s not in STAGE_ORDER)
    return unknown[-1] if unknown else [s for s in STAGE_ORDER if s in stages][-1]


def _curve(record: dict[str, Any], stage: str) -> tuple[list[float], list[float]]:
    pairs = [(float(p[0]), float(p[1])) for p in record["curves"][stage]
             if isinstance(p, (list, tuple)) and len(p) >= 2 and p[1] is not None and math.isfinite(p[1])]  # fmt: skip
    return [p[0] for p in pairs], [p[1] for p in pairs]


def loss_curves(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Training loss vs. step of each method's last stage per task, lowest seed with curves; None without curves."""
    finished = [r for r in runs if r["status"] in rec.FINISHED and last_stage(r)]
    if not finished:
        return None
    models, tasks, methods = layout(finished)
    plt, fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        for mi, model in enumerate(models):
            for method in methods[model]:
                mine = sorted((r for r in finished if (r["model"], r["method"], r["task"]) == (model, method, task)),
                              key=lambda r: r["seed"])  # fmt: skip
                if not mine:
                    continue
                record = mine[0]
                steps, losses = _curve(record, last_stage(record))
                if steps:
                    label = method if len(models) == 1 else f"{model} {method}"
                    ax.plot(steps, losses, color=f"C{_method_index(method) % 10}", linewidth=0.8,
                            linestyle=_LINESTYLES[mi % len(_LINESTYLES)], label=label)  # fmt: skip
        _label(ax, task, "optimizer step (last stage)", "training loss")
        if ax.lines:
            ax.legend(fontsize=5)
    return _save(plt, fig, path, "Training loss of each method's own stage (lowest seed)")


def alpha_sweep_plot(sweeps: list[dict[str, Any]], path: Path) -> Path | None:
    """Headline vs. α per task (mean over seeds); None when no sweep finished."""
    ok = [r for r in sweeps if r["status"] == "ok" and r.get("curve")]
    if not ok:
        return None
    _, tasks, _ = layout(ok)
    models = sorted({r["model"] for r in ok})
    plt, fig, axes = _grid(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        for model in models:
            points: dict[float, list[float]] = {}
            for r in ok:
                if r["task"] == task and r["model"] == model:
                    for p in r["curve"]:
                        value = score({**r, "headline": p.get("headline")})
                        if value is not None:
                            points.setdefault(float(p["alpha"]), []).append(value)
            alphas = sorted(points)
            ax.plot(alphas, [statistics.fmean(points[a]) for a in alphas], marker="o", markersize=3, label=model)
        _label(ax, task, "α (weight of the pretrained model)")
        ax.legend(fontsize=6)
    return _save(plt, fig, path, "WiSE-FT weight mix θ = α·θ_pre + (1−α)·θ_fine")


def _ood_mean(record: dict[str, Any], names: list[str], entries: dict[str, Any] | None = None) -> float | None:
    """The mean over shift sets ``names`` of a record's (or an α point's) shift headlines, in percent."""
    entries = record.get("shift_metrics") if entries is None else entries
    values = [score({**record, "headline": (entries or {}).get(n, {}).get("headline")}) for n in names]
    return statistics.fmean(values) if names and all(v is not None for v in values) else None


def _alpha_curves(runs, sweeps, model: str, task: str, names: list[str]) -> dict[str, list[tuple[float, float, float]]]:
    """Label → [(α, mean ID, mean OOD)] for the WiSE-FT sweep and the hybrid α grid (each with ≥ 2 α values)."""
    by_alpha: dict[str, dict[float, list[tuple[float, float]]]] = {"WiSE-FT α sweep": {}, "hybrid α grid": {}}
    for r in sweeps:
        if r["status"] == "ok" and (r["model"], r["task"]) == (model, task):
            for p in r.get("curve") or []:
                x, y = score({**r, "headline": p.get("headline")}), _ood_mean(r, names, p.get("shift"))
                if x is not None and y is not None:
                    by_alpha["WiSE-FT α sweep"].setdefault(float(p["alpha"]), []).append((x, y))
    for r in runs:
        config = r.get("config") or {}
        if r["status"] == "ok" and (r["model"], r["task"], config.get("method")) == (model, task, "hybrid"):
            alpha = dict(map(tuple, config.get("method_args") or [])).get("alpha", HybridConfig.alpha)
            if not isinstance(alpha, (int, float)):
                continue  # "auto", "adamerging" or a per-layer list: not a point on the α axis
            alpha = float(alpha)
            x, y = score(r), _ood_mean(r, names)
            if x is not None and y is not None:
                by_alpha["hybrid α grid"].setdefault(alpha, []).append((x, y))
    return {label: [(a, statistics.fmean(p[0] for p in pts[a]), statistics.fmean(p[1] for p in pts[a]))
                    for a in sorted(pts)] for label, pts in by_alpha.items() if len(pts) > 1}  # fmt: skip


def effective_robustness(runs: list[dict[str, Any]], sweeps: list[dict[str, Any]], path: Path) -> Path | None:
    """ID vs. OOD (mean over the task's shift sets) per task, methods as points, α curves; None without shift sets."""
    models, tasks, methods = layout(runs)
    panels = [(t, shift_sets(runs, t)[0]) for t in tasks]
    panels = [(t, names) for t, names in panels if names]
    if not panels:
        return None
    plt, fig, axes = _grid(len(panels))
    markers = "os^Dv<>pPX*h"
    for ax, (task, names) in zip(axes, panels, strict=True):
        for mi, model in enumerate(models):
            for method in methods[model]:
                pairs = [(score(r), _ood_mean(r, names)) for r in runs if r["status"] == "ok"
                         and (r["model"], r["method"], r["task"]) == (model, method, task)]  # fmt: skip
                pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
                if not pairs:
                    continue
                xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
                x, y = statistics.fmean(xs), statistics.fmean(ys)
                ex, ey = (statistics.stdev(v) if len(v) > 1 else 0.0 for v in (xs, ys))
                color = f"C{_method_index(method) % 10}"
                ax.errorbar([x], [y], xerr=[ex], yerr=[ey], fmt=markers[mi % len(markers)], color=color, capsize=2)
                ax.annotate(method, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
            for ci, (label, curve) in enumerate(_alpha_curves(runs, sweeps, model, task, names).items()):
                ax.plot([p[1] for p in curve], [p[2] for p in curve], linestyle=_LINESTYLES[(ci + 1) % 4],
                        marker=".", markersize=3, color="0.3" if ci == 0 else "C3", linewidth=0.8, label=label)  # fmt: skip
                for a, x, y in curve:
                    ax.annotate(f"{a:g}", (x, y), fontsize=5, xytext=(2, -6), textcoords="offset points")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
        shown = names[0] if len(names) == 1 else f"mean of {len(names)} shift sets"
        _label(ax, task, "in distribution (%)", f"{shown} (%)")
    return _save(plt, fig, path, "Effective robustness: ID vs. OOD headline, mean ± std over seeds")


def write_plots(records: list[dict[str, Any]], directory: str | Path) -> list[Path]:
    """Every plot that has data into the results folder; returns the files written."""
    directory = Path(directory)
    runs, sweeps = split_records(records)
    written = [params_vs_score(runs, directory / "params_vs_score.png"),
               score_vs_flops(runs, directory / "score_vs_flops.png"),
               loss_curves(runs, directory / "loss_curves.png"),
               alpha_sweep_plot(sweeps, directory / "alpha_sweep.png"),
               effective_robustness(runs, sweeps, directory / "effective_robustness.png")]  # fmt: skip
    return [p for p in written if p is not None]
