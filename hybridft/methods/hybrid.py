"""The hybrid method (DESIGN.md §1) and its distillation ablations: `hybrid`, `kd_pre`, `kd_fine`, `hybrid_output`.

1–2. LP teacher θ_pre and LP-FT teacher θ_fine (cached stages, `hybridft.stages`);
3.   the student starts at θ_mix = α·θ_pre + (1−α)·θ_fine (weight mix), or at θ_fine for `hybrid_output`;
4.   it trains on ce_weight·CE(z_mix, y) + β·T²·KL(p_pre ‖ p_mix) + γ·T²·KL(p_fine ‖ p_mix) through
     `hybrid_kd_loss` (regression: the MSE form in `hybridft.distill`), with the teachers' logits computed once and
     cached. `hybrid_output` mixes in output space instead: m = α·z_pre + (1−α)·z_student through the loss's
     ``alpha``, and at inference through both models.

Ablations: `kd_pre` (γ = 0, only the pretrained teacher) and `kd_fine` (β = 0, only the fine-tuned one).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

from hybridft.distill import (
    OutputMixModel,
    cached_teacher_logits,
    fit_distillation,
    rows_for,
    with_index,
    with_unlabelled,
)
from hybridft.interpolate import check_alpha, interpolate_models
from hybridft.methods import register
from hybridft.methods.base import Method, MethodConfig, TrainContext, Trained
from hybridft.models import count_parameters
from hybridft.stages import StageFields, teachers
from hybridft.training import FitResult

LOSS_BACKENDS = ("auto", "triton", "torch", "reference")


def check_loss_fields(settings) -> None:
    """ValueError naming the field of ``settings`` (a `HybridConfig` or `HybridTrainingArguments`) that is out of
    range: α ∉ [0, 1], β, γ or ce_weight < 0, T ≤ 0, an unknown loss back end."""
    owner = type(settings).__name__
    check_alpha(settings.alpha)
    for name in ("beta", "gamma", "ce_weight"):
        if not getattr(settings, name) >= 0:
            raise ValueError(f"{owner}.{name} must be >= 0, got {getattr(settings, name)}")
    if not settings.temperature > 0:
        raise ValueError(f"{owner}.temperature must be > 0, got {settings.temperature}")
    if settings.loss_backend not in LOSS_BACKENDS:
        raise ValueError(f"{owner}.loss_backend must be one of {LOSS_BACKENDS}, got {settings.loss_backend!r}")


@dataclass(frozen=True)
class HybridConfig(StageFields, MethodConfig):
    """Distillation from both teachers. α = 0.5 is WiSE-FT's default mix; T = 2 and equal teacher weights
    β = γ = 1 follow Hinton et al. (2015)'s soft targets at a moderate temperature; lr as for full fine-tuning.

    ``unlabeled_split``: a split of the task whose inputs join the KD data without labels (None: only the training
    inputs; the train split: its rows outside the training subset and the dev split); ``unlabeled_size``: a seeded
    subset of it. ``loss_backend`` goes to `hybrid_kd_loss`.
    """

    alpha: float = 0.5
    beta: float = 1.0
    gamma: float = 1.0
    temperature: float = 2.0
    ce_weight: float = 1.0
    unlabeled_split: str | None = None
    unlabeled_size: int | None = None
    loss_backend: str = "auto"

    def validate(self) -> None:
        super().validate()
        self.validate_stages()
        check_loss_fields(self)
        if self.unlabeled_size is not None and (not isinstance(self.unlabeled_size, int) or self.unlabeled_size < 1):
            raise ValueError(f"unlabeled_size must be None or an integer >= 1, got {self.unlabeled_size!r}")

    def loss_kwargs(self) -> dict:
        return {
            "beta": self.beta,
            "gamma": self.gamma,
            "temperature": self.temperature,
            "ce_weight": self.ce_weight,
            "backend": self.loss_backend,
        }


@dataclass(frozen=True)
class KdPreConfig(HybridConfig):
    """Hybrid with only the pretrained teacher: γ = 0."""

    gamma: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.gamma != 0:
            raise ValueError(f"kd_pre distils from the pretrained teacher only: gamma must be 0, got {self.gamma}")


@dataclass(frozen=True)
class KdFineConfig(HybridConfig):
    """Hybrid with only the fine-tuned teacher: β = 0."""

    beta: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.beta != 0:
            raise ValueError(f"kd_fine distils from the fine-tuned teacher only: beta must be 0, got {self.beta}")


def unlabelled_features(ctx: TrainContext, config):
    """(features, SubsetInfo) of the configured unlabelled inputs, labels still on, or (None, None) without any.

    ``config.unlabeled_split`` names a split of the task; the train split itself means its other rows, those the
    run neither trains on nor holds out as dev (`hybridft.experiment.training_rest`). ``unlabeled_size`` draws a
    seeded subset. ``config`` is a `HybridConfig` or a `PlainMatchedConfig` sized after one."""
    if config.unlabeled_split is None:
        return None, None
    from hybridft.data import subset
    from hybridft.experiment import qa_stride, training_rest

    task, run = ctx.task, ctx.run
    if config.unlabeled_split in task.eval_splits:
        raise ValueError(f"unlabeled_split must not be the evaluation split {config.unlabeled_split!r}")
    if config.unlabeled_split == task.train_split:
        source, split = training_rest(run, task), f"{task.train_split}[rest]"
    else:
        source, split = task.load(config.unlabeled_split, run.data_dir), config.unlabeled_split
    raw, info = subset(source, config.unlabeled_size, run.seed, task=task.name, split=split)
    extra = task.preprocess(raw, ctx.tokenizer, max_length=run.max_length, train=True, stride=qa_stride(run.max_length))
    return extra, info


def distill_features(ctx: TrainContext, config: HybridConfig):
    """(the training features plus the unlabelled inputs' with their labels set to ignore, if configured, with the
    index column; the unlabelled subset's SubsetInfo or None)."""
    features = ctx.train_features
    extra, info = unlabelled_features(ctx, config)
    if extra is not None:
        features = with_unlabelled(features, extra, rows_for(ctx.task.kind))
    return with_index(features), info


def _compute_device():
    import os

    import torch

    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}") if torch.cuda.is_available() else "cpu"


def needed_teachers(pre, fine, *, need_pre: bool, need_fine: bool) -> list:
    """The teachers to run: those whose loss weight is not 0 (θ_fine alone when neither is)."""
    return [m for m, need in ((pre, need_pre), (fine, need_fine)) if need] or [fine]


def assign_teachers(computed: list, *, need_pre: bool, need_fine: bool):
    """(θ_pre's, θ_fine's) from per-teacher results in `needed_teachers` order; a teacher that was not run takes the
    other's (its loss weight is 0, so it only fills the argument)."""
    return (computed[0] if need_pre else computed[-1]), (computed[-1] if need_fine else computed[0])


def teacher_passes(models, features, collator, rows, *, device, cache_dir, key_data, batch_size, progress):
    """Each model's cached rows on ``features`` (`cached_teacher_logits`, run on ``device``, then moved back to the
    CPU), and the compute time recorded for them. The bench's hybrid methods and `hybridft.HybridTrainer` both run
    their teachers through this."""
    computed, seconds = [], 0.0
    for model in models:
        model.to(device)
        values, elapsed = cached_teacher_logits(model, features, collator, rows, cache_dir=cache_dir,
                                                key_data=key_data, batch_size=batch_size, progress=progress)  # fmt: skip
        model.to("cpu")
        computed.append(values)
        seconds += elapsed
    return computed, seconds


def cached_teacher_passes(ctx: TrainContext, features, rows, models) -> tuple[list, float]:
    """`teacher_passes` with a run's collator, cache, batch size and compute device."""
    return teacher_passes(models, features, ctx.collator(), rows, device=_compute_device(), cache_dir=ctx.cache_dir,
                          key_data=ctx.data_key, batch_size=ctx.run.eval_batch_size, progress=ctx.progress)  # fmt: skip


def teacher_rows(ctx: TrainContext, features, rows, pre, fine, *, need_pre: bool, need_fine: bool):
    """Cached teacher logits of θ_pre and θ_fine on ``features``; a teacher whose weight is 0 is not run (the
    other's rows stand in, multiplied by 0). Returns (pre_logits, fine_logits, FitResult of their cost)."""
    needed = needed_teachers(pre, fine, need_pre=need_pre, need_fine=need_fine)
    computed, seconds = cached_teacher_passes(ctx, features, rows, needed)
    pre_logits, fine_logits = assign_teachers(computed, need_pre=need_pre, need_fine=need_fine)
    return pre_logits, fine_logits, teacher_pass_cost(features, needed, seconds)


def teacher_pass_cost(features, models, seconds: float) -> FitResult:
    """The cost of one forward pass of each of ``models`` over ``features`` (their non-padding tokens, 2·P each)."""
    from hybridft.batching import feature_lengths
    from hybridft.compute import pass_parameters

    tokens = sum(feature_lengths(features))
    flops = sum(tokens * pass_parameters(model).forward_flops_per_token for model in models)
    return FitResult(
        train_time_s=seconds,
        samples=len(features) * len(models),
        training_loss=0.0,
        stage="teacher_logits",
        forward_tokens=tokens * len(models),
        flops=float(flops),
    )


@register
class Hybrid(Method):
    name = "hybrid"
    config_class: ClassVar[type[MethodConfig]] = HybridConfig
    output_mix: ClassVar[bool] = False  # True: mix outputs with the frozen θ_pre instead of weights

    def train(self, ctx: TrainContext, config: HybridConfig) -> Trained:
        if ctx.task.kind == "causal_lm":  # distils through the LM heads from cached hidden states
            from hybridft.lm_distill import train_lm_hybrid

            return train_lm_hybrid(self, ctx, config)
        pair = teachers(ctx, config)
        features, unlabelled = distill_features(ctx, config)
        rows = rows_for(ctx.task.kind)
        pre_logits, fine_logits, teacher_cost = teacher_rows(
            ctx,
            features,
            rows,
            pair.pre,
            pair.fine,
            need_pre=config.beta > 0 or self.output_mix,
            need_fine=config.gamma > 0,
        )
        student = self.initial_student(pair, config)
        for param in student.parameters():
            param.requires_grad_(True)
        spec = ctx.spec(config.learning_rate, weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio)
        loss_kwargs = {"alpha": config.alpha if self.output_mix else 0.0, **config.loss_kwargs()}
        result = fit_distillation(
            student,
            features,
            ctx.collator(),
            spec,
            kind=ctx.task.kind,
            pre_logits=pre_logits,
            fine_logits=fine_logits,
            loss_kwargs=loss_kwargs,
            **ctx.fit_kwargs(self.name),
        )
        model = self.inference_model(student, pair, config)
        trainable, total = count_parameters(model)  # a frozen teacher used at inference counts in total only
        fits = [*pair.fits, teacher_cost, result]
        extra = {} if unlabelled is None else {"unlabeled": unlabelled.to_dict()}
        return Trained(model=model, fits=fits, trainable_params=trainable, total_params=total, extra=extra)

    def initial_student(self, pair, config: HybridConfig):
        """Stage 3: the student starts at θ_mix = α·θ_pre + (1−α)·θ_fine."""
        return interpolate_models(pair.pre, pair.fine, config.alpha)

    def inference_model(self, student, pair, config: HybridConfig):
        return student


@register
class KdPre(Hybrid):
    name = "kd_pre"
    config_class = KdPreConfig


@register
class KdFine(Hybrid):
    name = "kd_fine"
    config_class = KdFineConfig


@register
class HybridOutput(Hybrid):
    name = "hybrid_output"
    config_class = HybridConfig
    output_mix = True
    # mixing logits over a vocabulary at every generated token is not built (`hybridft.lm_distill`)
    task_kinds = ("classification", "regression", "token", "qa")

    def initial_student(self, pair, config: HybridConfig):
        """The trainable branch starts at θ_fine; its logits are mixed with θ_pre's, in the loss and at inference."""
        return copy.deepcopy(pair.fine)

    def inference_model(self, student, pair, config: HybridConfig):
        return OutputMixModel(student, pair.pre, config.alpha)
