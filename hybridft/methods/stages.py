"""The teacher stages of a method's run: the library's one teacher pipeline (`hybridft.teachers`) called with what
a `TrainContext` knows (model spec, task, seed, training data, batch size), which keys their cache.

The stage a method trains itself goes through here too: `full_fine_tune` is `plain` for a causal LM and the hybrid
family's θ_fine there, shared at equal settings.
"""

from __future__ import annotations

import torch

from hybridft.methods.base import TrainContext
from hybridft.probe import ProbeSettings
from hybridft.teachers import (
    Probed,
    StageFields,
    Teachers,
    build_teachers,
    compute_device,
    lp_ft_stage,
    lp_stage,
    probe_teacher_rows,
    teacher_passes,
    weights_stage,
)


def base_key(ctx: TrainContext) -> dict:
    run = ctx.run
    return {
        "model": run.model,
        "task": ctx.task.name,
        "seed": run.seed,
        "data": ctx.data_key,
        "batch_size": run.batch_size,
    }


def linear_probe(ctx: TrainContext, settings: ProbeSettings) -> Probed:
    """Stage 1: θ_pre, the head fit to convergence on the frozen encoder's features (`hybridft.probe`); λ on the
    run's dev split when it has one, else by cross-validation."""
    if ctx.task.kind == "causal_lm":
        raise ValueError(
            f"task {ctx.task.name!r} is a causal LM: its pretrained head already speaks, so there is no linear-probe "
            "stage (lp and lp_ft do not apply; hybrid, kd_pre, kd_fine and wise_ft use the pretrained LM as θ_pre)"
        )
    return lp_stage(ctx.cache_dir, base_key(ctx), ctx.build_model, ctx.train_features, ctx.collator(),
                    kind=ctx.task.kind, settings=settings, batch_size=ctx.run.eval_batch_size,
                    dev_features=ctx.dev_features, progress=ctx.progress, device=compute_device())  # fmt: skip


def fine_tune_from(
    ctx: TrainContext, pre: torch.nn.Module, pre_key: str, fields: StageFields, learning_rate: float | None = None
):
    """Stage 2: θ_fine, every weight trained starting from θ_pre. Returns (model, FitResult, stage key)."""
    lr = fields.ft_learning_rate if learning_rate is None else learning_rate
    spec = ctx.spec(lr, fields.ft_epochs, weight_decay=fields.ft_weight_decay, warmup_ratio=fields.ft_warmup_ratio)
    return lp_ft_stage(ctx.cache_dir, base_key(ctx), pre, pre_key, ctx.train_features, ctx.collator(), spec,
                       ctx.fit_kwargs("lp_ft"))  # fmt: skip


def full_fine_tune(ctx: TrainContext, learning_rate: float, epochs: float | None, weight_decay: float,
                   warmup_ratio: float):  # fmt: skip
    """Every weight of the pretrained model trained (no probe first), cached as stage "ft". Returns (model, FitResult,
    stage key). For a causal LM this is both `plain` and the hybrid family's θ_fine, which share it at equal
    settings: its LM head already speaks, so there is no linear-probe stage (`hybridft.lm_distill`)."""
    spec = ctx.spec(learning_rate, epochs, weight_decay=weight_decay, warmup_ratio=warmup_ratio)
    return weights_stage(ctx.cache_dir, "ft", base_key(ctx), ctx.build_model, ctx.train_features, ctx.collator(),
                         spec, ctx.fit_kwargs("ft"))  # fmt: skip


def teachers(ctx: TrainContext, fields: StageFields) -> Teachers:
    """θ_pre and θ_fine of a run, from the one teacher pipeline (`hybridft.teachers.build_teachers`) keyed by the
    run's model spec, task, seed, data and batch size: LP then LP-FT, or for a causal LM the pretrained LM and its
    full fine-tune (stage "ft", shared with `plain`)."""
    spec = ctx.spec(fields.ft_learning_rate, fields.ft_epochs, weight_decay=fields.ft_weight_decay,
                    warmup_ratio=fields.ft_warmup_ratio)  # fmt: skip
    return build_teachers(ctx.cache_dir, base_key(ctx), ctx.build_model, ctx.train_features, ctx.collator(),
                          kind=ctx.task.kind, probe=fields.probe_settings(ctx.run.seed), ft_spec=spec,
                          fit_kwargs=ctx.fit_kwargs, batch_size=ctx.run.eval_batch_size,
                          dev_features=ctx.dev_features, progress=ctx.progress, device=compute_device())  # fmt: skip


def cached_teacher_passes(ctx: TrainContext, features, rows, models) -> tuple[list, float]:
    """`teacher_passes` with a run's collator, cache, batch size and compute device."""
    return teacher_passes(models, features, ctx.collator(), rows, device=compute_device(), cache_dir=ctx.cache_dir,
                          key_data=ctx.data_key, batch_size=ctx.run.eval_batch_size, progress=ctx.progress)  # fmt: skip


def teacher_rows(ctx: TrainContext, features, rows, pre, fine, *, need_pre: bool, need_fine: bool,
                 pre_logits=None):  # fmt: skip
    """Cached teacher logits of θ_pre and θ_fine on ``features``; a teacher whose weight is 0 is not run (the
    other's rows stand in, multiplied by 0). ``pre_logits``: θ_pre's rows on exactly ``features`` from the probe
    (`hybridft.teachers.Teachers.pre_logits`), so θ_pre is not run. Returns (pre_logits, fine_logits, FitResult of
    their cost)."""
    return probe_teacher_rows(
        lambda models: cached_teacher_passes(ctx, features, rows, models),
        features, pre, fine, need_pre=need_pre, need_fine=need_fine, pre_logits=pre_logits,
    )  # fmt: skip
