"""``alpha = "auto"``: the hybrid method's α chosen on the run's dev split before distillation.

The dev split is the run's own (the benchmark's ``TrainContext.dev_split``: `bench.experiment.split_dev` with
``RunConfig.dev_size`` and the run's seed, rows held out of the train split, disjoint from the training subset), all
of it, preprocessed as evaluation data. Each α of the grid (`DEFAULT_ALPHAS`: 0, 0.1, …, 1) builds a candidate with ``make_model(α)`` (the
weight mix `interpolate_models(θ_pre, θ_fine, α)` for hybrid, kd_pre and kd_fine; the output mix of the two teachers
for hybrid_output), which is scored by ``TrainContext.score`` (`bench.experiment.score`) on the task's headline metric. Every headline of
the benchmark is higher-is-better (accuracy, F1, Matthews and Pearson correlation: the tables bold the largest mean,
the learning-rate sweep picks the largest dev headline, `failed_to_learn` compares against the baseline from above),
so the largest score wins; a non-finite score never wins. Ties: the α closest to 0.5 (the default mix), then the
smaller α.

Compute: one forward pass of the candidate over the dev features per α, counted like the teachers' passes
(`hybridft.methods.hybrid.teacher_pass_cost`): non-padding tokens × 2·P_forward of the candidate (both models for an
output mix), recorded as the stage "alpha_search" with the measured wall time (mixing and scoring included).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from hybridft.batching import feature_lengths
from hybridft.compute import pass_parameters
from hybridft.fitting import FitResult
from hybridft.interpolate import check_alpha

STAGE = "alpha_search"
DEFAULT_ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass
class AlphaSearch:
    """The chosen α, the scored grid [(α, score)], the metric, the dev split's size and the stage's cost."""

    chosen: float
    grid: list[tuple[float, float]]
    metric: str
    dev_size: int
    fit: FitResult

    def to_dict(self) -> dict:
        return {"mode": "auto", "chosen": self.chosen, "grid": [[a, s] for a, s in self.grid], "metric": self.metric,
                "dev_size": self.dev_size}  # fmt: skip


def pick(grid: Sequence[tuple[float, float]]) -> float:
    """The α of the best finite score (higher is better); ties: closest to 0.5, then the smaller; no finite score:
    the α closest to 0.5."""

    def key(point):
        alpha, value = point
        return (value if math.isfinite(value) else -math.inf, -round(abs(alpha - 0.5), 9), -alpha)

    return max(grid, key=key)[0]


def check_dev_split(run) -> None:
    """ValueError naming dev_size unless ``run`` (a RunConfig) holds out a dev split."""
    if getattr(run, "dev_size", None) is None:
        raise ValueError(
            "alpha='auto' chooses α on the run's dev split, and this run has none: set dev_size (RunConfig.dev_size, "
            "a profile's dev_size) to the number of training rows to hold out"
        )


def dev_data(ctx):
    """(examples, features) of the run's dev split (``ctx.dev_split``, the bench's `bench.experiment.dev_examples`);
    ValueError naming dev_size when the run has none."""
    check_dev_split(ctx.run)
    if ctx.dev_split is None or ctx.score is None:
        raise ValueError("alpha='auto' scores each α on the run's dev split: the TrainContext needs dev_split and "
                         "score (the benchmark sets both, `bench.experiment.train_context`)")  # fmt: skip
    return ctx.dev_split()


def search_alpha(
    ctx, make_model: Callable[[float], torch.nn.Module], alphas: Sequence[float] | None = None
) -> AlphaSearch:
    """Score ``make_model(α)`` on the dev split for every α of ``alphas`` (default `DEFAULT_ALPHAS`) and pick one
    (module docstring)."""
    alphas = [check_alpha(a) for a in (DEFAULT_ALPHAS if alphas is None else alphas)]
    examples, features = dev_data(ctx)
    metric = ctx.task.headline
    work_dir = ctx.stage_dir(STAGE)
    start = time.perf_counter()
    grid, flops_per_token = [], 0
    for alpha in alphas:
        model = make_model(alpha)
        flops_per_token = pass_parameters(model).forward_flops_per_token
        metrics = ctx.score(model, features, examples, work_dir)
        grid.append((alpha, float(metrics.get(metric, math.nan))))
        del model
    seconds = time.perf_counter() - start
    tokens = sum(feature_lengths(features))
    fit = FitResult(
        train_time_s=seconds,
        samples=len(features) * len(alphas),
        training_loss=0.0,
        stage=STAGE,
        forward_tokens=tokens * len(alphas),
        flops=float(tokens * len(alphas) * flops_per_token),
    )
    return AlphaSearch(chosen=pick(grid), grid=grid, metric=metric, dev_size=len(examples), fit=fit)


__all__ = ["DEFAULT_ALPHAS", "STAGE", "AlphaSearch", "check_dev_split", "dev_data", "pick", "search_alpha"]
