"""Plots from the records (matplotlib, Agg): score vs. trainable parameters, and the α-sweep curves.

DIR/params_vs_score.png   one panel per task: headline (%) vs. trainable parameters (log x), a point per
                          (model, method) with the spread over seeds as an error bar
DIR/alpha_sweep.png       one panel per task: headline (%) vs. α (weight of the pretrained model in the WiSE-FT
                          mix), mean over seeds, a line per model
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from bench.tables import METHOD_ORDER, TASK_LABELS, cells, layout, score, split_records

_PNG_METADATA = {"Software": None}  # no matplotlib version stamp: same records → same bytes on one install


def _grid(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, list(axes.flat[:n])


def _method_index(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER) + sum(map(ord, method))


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
                color = f"C{_method_index(method) % 10}"  # one colour per method across panels and models
                ax.errorbar([x], [cell.mean], yerr=[err], fmt=markers[mi % len(markers)], color=color, capsize=2)
                ax.annotate(method, (x, cell.mean), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(TASK_LABELS.get(task, task), fontsize=9)
        ax.set_xlabel("trainable parameters", fontsize=7)
        ax.set_ylabel("headline (%)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("Score vs. trainable parameters (" + ", ".join(models) + ")", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=_PNG_METADATA)
    plt.close(fig)
    return path


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
        ax.set_title(TASK_LABELS.get(task, task), fontsize=9)
        ax.set_xlabel("α (weight of the pretrained model)", fontsize=7)
        ax.set_ylabel("headline (%)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    fig.suptitle("WiSE-FT weight mix θ = α·θ_pre + (1−α)·θ_fine", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=_PNG_METADATA)
    plt.close(fig)
    return path


def write_plots(records: list[dict[str, Any]], directory: str | Path) -> list[Path]:
    """Both plots into the results folder; returns the files written."""
    directory = Path(directory)
    runs, sweeps = split_records(records)
    written = [params_vs_score(runs, directory / "params_vs_score.png"),
               alpha_sweep_plot(sweeps, directory / "alpha_sweep.png")]  # fmt: skip
    return [p for p in written if p is not None]
