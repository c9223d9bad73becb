"""The hybrid method (docs/design.md §1) and its distillation ablations: `hybrid`, `kd_pre`, `kd_fine`, `hybrid_output`.

1–2. LP teacher θ_pre and LP-FT teacher θ_fine (cached stages, `hybridft.methods.stages`, `hybridft.teachers`);
3.   the student starts at θ_mix = α·θ_pre + (1−α)·θ_fine (weight mix), or at θ_fine for `hybrid_output`;
4.   it trains on ce_weight·CE(z_mix, y) + β·T²·KL(p_pre ‖ p_mix) + γ·T²·KL(p_fine ‖ p_mix) through
     `hybrid_kd_loss` (regression: the MSE form in `hybridft.distill`), with the teachers' logits computed once and
     cached. `hybrid_output` mixes in output space instead: m = α·z_pre + (1−α)·z_student through the loss's
     ``alpha``, and at inference through both models.

Ablations: `kd_pre` (γ = 0, only the pretrained teacher) and `kd_fine` (β = 0, only the fine-tuned one).

Choosing α (``HybridConfig.alpha``):

- a number in [0, 1]: the mix as written;
- ``"auto"``: the grid 0, 0.1, …, 1 scored on the run's dev split by the task's headline (`hybridft.alpha_search`;
  needs ``RunConfig.dev_size``), before distillation; its forward passes are the stage "alpha_search";
- a list [a_0, …, a_K] (K ≥ 1): one α per depth group, spread over the layers as mergekit's gradient parameters
  (`hybridft.layer_alpha`); mixing costs nothing, so no stage is added;
- ``"adamerging"``: one α per depth group learned by minimising the prediction entropy on the unlabelled training
  inputs (`hybridft.adamerging`, ``adamerging_steps`` / ``adamerging_lr``), the stage "adamerging";
  classification and token tasks only.

``Trained.extra["alpha"]`` records the choice for the last three. kd_pre and kd_fine take every form (they start
from the same weight mix). hybrid_output mixes outputs, m = α·z_pre + (1−α)·z_student, so a per-layer α means
nothing there: it takes a number or ``"auto"``, which scores the output mix of the two teachers, α·z_pre +
(1−α)·z_fine (its student starts at θ_fine), at each α. The causal-LM path (`hybridft.lm_distill`) takes a number only.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

from hybridft.adamerging import SUPPORTED_KINDS, adamerge, check_kind
from hybridft.alpha_search import check_dev_split, search_alpha
from hybridft.distill import OutputMixModel, rows_for, with_index, with_unlabelled
from hybridft.interpolate import interpolate_models
from hybridft.layer_alpha import check_layer_values, group_alphas, layer_groups
from hybridft.methods.base import Method, MethodConfig, TrainContext, Trained
from hybridft.methods.distillation import fit_distillation
from hybridft.methods.lm_hybrid import train_lm_hybrid
from hybridft.methods.registry import register
from hybridft.methods.stages import teacher_rows, teachers
from hybridft.models import count_parameters
from hybridft.task_kinds import qa_stride
from hybridft.teachers import StageFields, compute_device
from hybridft.trainer_config import check_distill_fields

ALPHA_MODES = ("auto", "adamerging")
ALPHA_EXPECTED = "a number in [0, 1], 'auto', 'adamerging' or a list of >= 2 numbers in [0, 1] (per-layer α)"


def check_alpha_choice(config) -> None:
    """TypeError/ValueError naming ``config``'s alpha field and what it may be (`ALPHA_EXPECTED`); a list becomes a
    tuple of floats (a TOML/JSON override), so the config stays hashable."""
    owner, alpha = type(config).__name__, config.alpha
    if isinstance(alpha, str):
        if alpha not in ALPHA_MODES:
            raise ValueError(f"{owner}.alpha must be {ALPHA_EXPECTED}, got {alpha!r}")
    elif isinstance(alpha, (list, tuple)):
        object.__setattr__(config, "alpha", check_layer_values(alpha, f"{owner}.alpha"))
    elif isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"{owner}.alpha must be {ALPHA_EXPECTED}, got {alpha!r}")
    elif not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{owner}.alpha must be in [0, 1] (1 = the pretrained teacher, 0 = the fine-tuned one) or "
                         f"one of {ALPHA_MODES} or a per-layer list, got {alpha!r}")  # fmt: skip


def check_number_alpha(config, method: str) -> None:
    """ValueError naming ``config``'s alpha field unless it is a number (``method`` has no "auto", AdaMerging or
    per-layer form); its range is `check_alpha_choice`'s."""
    if isinstance(config.alpha, bool) or not isinstance(config.alpha, (int, float)):
        raise ValueError(f"{type(config).__name__}.alpha must be a number in [0, 1] for {method}, got "
                         f"{config.alpha!r}")  # fmt: skip


@dataclass(frozen=True)
class HybridConfig(StageFields, MethodConfig):
    """Distillation from both teachers. α = 0.5 is WiSE-FT's default mix; T = 2 and equal teacher weights
    β = γ = 1 follow Hinton et al. (2015)'s soft targets at a moderate temperature; lr as for full fine-tuning.

    ``unlabeled_split``: a split of the task whose inputs join the KD data without labels (None: only the training
    inputs; the train split: its rows outside the training subset and the dev split); ``unlabeled_size``: a seeded
    subset of it. ``loss_backend`` goes to `hybrid_kd_loss`.

    ``alpha``: a number, "auto", a per-layer list or "adamerging" (module docstring). ``adamerging_steps`` and
    ``adamerging_lr`` (used with "adamerging" only): Adam steps over the α's and their learning rate, 500 and 1e-3
    as in AdaMerging's code (Yang et al., ICLR 2024).
    """

    alpha: float | str | tuple[float, ...] = 0.5
    beta: float = 1.0
    gamma: float = 1.0
    temperature: float = 2.0
    ce_weight: float = 1.0
    unlabeled_split: str | None = None
    unlabeled_size: int | None = None
    loss_backend: str = "auto"
    adamerging_steps: int = 500
    adamerging_lr: float = 1e-3

    def validate(self) -> None:
        super().validate()
        self.validate_stages()
        check_alpha_choice(self)
        check_distill_fields(self)
        owner = type(self).__name__
        steps = self.adamerging_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{owner}.adamerging_steps must be an integer >= 1, got {steps!r}")
        lr = self.adamerging_lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"{owner}.adamerging_lr must be a positive finite number, got {lr!r}")
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
class HybridOutputConfig(HybridConfig):
    """`HybridConfig` for hybrid_output: α weighs outputs, so it is a number or "auto" (module docstring)."""

    def validate(self) -> None:
        super().validate()
        if not (isinstance(self.alpha, (int, float)) or self.alpha == "auto"):
            raise ValueError(
                f"hybrid_output mixes outputs, not weights: HybridOutputConfig.alpha must be a number in [0, 1] or "
                f"'auto', got {self.alpha!r} (per-layer lists and 'adamerging' apply to hybrid, kd_pre and kd_fine)"
            )


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
    run neither trains on nor holds out as dev (``TrainContext.unlabelled``, `bench.experiment.unlabelled_rows`). ``unlabeled_size`` draws a
    seeded subset. ``config`` is a `HybridConfig` or a `PlainMatchedConfig` sized after one."""
    if config.unlabeled_split is None:
        return None, None
    task, run = ctx.task, ctx.run
    if config.unlabeled_split in task.eval_splits:
        raise ValueError(f"unlabeled_split must not be the evaluation split {config.unlabeled_split!r}")
    if ctx.unlabelled is None:
        raise ValueError("unlabeled_split: the TrainContext needs unlabelled (the benchmark sets it, "
                         "`bench.experiment.train_context`)")  # fmt: skip
    raw, info = ctx.unlabelled(config.unlabeled_split, config.unlabeled_size)
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


@register
class Hybrid(Method):
    name = "hybrid"
    command = "hybrid"
    about = "hybrid fine-tuning: the mix of both teachers, distilled from both"
    config_class: ClassVar[type[MethodConfig]] = HybridConfig
    output_mix: ClassVar[bool] = False  # True: mix outputs with the frozen θ_pre instead of weights

    def applies_to(self, task, config) -> bool:
        """Any kind with a number for α; "auto" and a per-layer list not on a causal LM; AdaMerging only where
        predictions are distributions (`hybridft.adamerging.SUPPORTED_KINDS`)."""
        if not super().applies_to(task, config):
            return False
        if config.alpha == "adamerging":
            return task.kind in SUPPORTED_KINDS
        return isinstance(config.alpha, (int, float)) or task.kind != "causal_lm"

    def train(self, ctx: TrainContext, config: HybridConfig) -> Trained:
        self.check_alpha_for(ctx, config)
        if ctx.task.kind == "causal_lm":  # distils through the LM heads from cached hidden states
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
            pre_logits=pair.pre_logits if unlabelled is None else None,  # the probe's rows: the training features
        )
        alpha, alpha_fits, alpha_record = self.choose_alpha(ctx, pair, config)
        student = self.initial_student(pair, config, alpha)
        for param in student.parameters():
            param.requires_grad_(True)
        spec = ctx.spec(config.learning_rate, weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio)
        loss_kwargs = {"alpha": alpha if self.output_mix else 0.0, **config.loss_kwargs()}
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
        model = self.inference_model(student, pair, config, alpha)
        trainable, total = count_parameters(model)  # a frozen teacher used at inference counts in total only
        fits = [*pair.fits, teacher_cost, *alpha_fits, result]
        extra = {} if unlabelled is None else {"unlabeled": unlabelled.to_dict()}
        if alpha_record is not None:
            extra["alpha"] = alpha_record
        return Trained(model=model, fits=fits, trainable_params=trainable, total_params=total, extra=extra,
                       teachers=pair)  # fmt: skip

    def check_alpha_for(self, ctx: TrainContext, config: HybridConfig) -> None:
        """ValueError, before any stage trains, when ``config.alpha`` cannot apply to this run: anything but a
        number on a causal LM, "auto" without a dev split, "adamerging" on a kind without class predictions."""
        alpha, task = config.alpha, ctx.task
        if isinstance(alpha, (str, tuple)) and task.kind == "causal_lm":
            raise ValueError(
                f"{self.name} on task {task.name!r} (a causal LM) takes alpha as a number in [0, 1], got "
                f"{alpha!r}: 'auto', 'adamerging' and per-layer lists are built for encoder tasks"
            )
        if alpha == "auto":
            check_dev_split(ctx.run)
        if alpha == "adamerging":
            check_kind(task.kind, task.name)

    def choose_alpha(self, ctx: TrainContext, pair, config: HybridConfig):
        """(α: a number, or state-dict name → number; the FitResults of choosing it; the record for
        ``Trained.extra["alpha"]``, None for a number as given)."""
        alpha = config.alpha
        if isinstance(alpha, (int, float)):
            return alpha, [], None
        if alpha == "auto":
            search = search_alpha(ctx, lambda a: self.candidate(pair, a))
            for model in (pair.pre, pair.fine):  # scoring may have moved a teacher to the compute device
                model.to("cpu")
            return search.chosen, [search.fit], search.to_dict()

        if alpha == "adamerging":
            learned = adamerge(pair.pre, pair.fine, ctx.train_features, ctx.collator(), kind=ctx.task.kind,
                               steps=config.adamerging_steps, lr=config.adamerging_lr, batch_size=ctx.run.batch_size,
                               seed=ctx.run.seed, device=compute_device(), progress=ctx.progress)  # fmt: skip
            record = {"mode": "adamerging", "per_group": learned.per_group, "entropy_start": learned.entropy_start,
                      "entropy_end": learned.entropy_end, "steps": config.adamerging_steps, "lr": config.adamerging_lr}  # fmt: skip
            return learned.alphas, [learned.fit], record
        groups = layer_groups(pair.fine)
        per_group = group_alphas(alpha, groups.count)
        record = {"mode": "layers", "values": list(alpha), "per_group": per_group}
        return {name: per_group[g] for name, g in groups.of.items()}, [], record

    def candidate(self, pair, alpha: float):
        """The model "auto" scores at ``alpha``: the weight mix θ(α)."""
        return interpolate_models(pair.pre, pair.fine, alpha)

    def initial_student(self, pair, config: HybridConfig, alpha=None):
        """Stage 3: the student starts at θ_mix = α·θ_pre + (1−α)·θ_fine; ``alpha`` (a number or a per-key map,
        `choose_alpha`) stands for ``config.alpha`` when given."""
        return interpolate_models(pair.pre, pair.fine, config.alpha if alpha is None else alpha)

    def inference_model(self, student, pair, config: HybridConfig, alpha=None):
        return student


@register
class KdPre(Hybrid):
    name = "kd_pre"
    command = "hybrid"
    command_fixed: ClassVar[dict[str, float]] = {"gamma": 0.0}
    about = "the teachers' mix, distilled from the pretrained teacher only"
    config_class = KdPreConfig


@register
class KdFine(Hybrid):
    name = "kd_fine"
    command = "hybrid"
    command_fixed: ClassVar[dict[str, float]] = {"beta": 0.0}
    about = "the teachers' mix, distilled from the fine-tuned teacher only"
    config_class = KdFineConfig


@register
class HybridOutput(Hybrid):
    name = "hybrid_output"
    command = None
    command_refusal = ("it mixes the outputs of two models at inference, so there is no single model to save; use "
                       "--method hybrid, which distils both teachers into one model")  # fmt: skip
    config_class = HybridOutputConfig
    output_mix = True
    # mixing logits over a vocabulary at every generated token is not built (`hybridft.lm_distill`)
    task_kinds = ("classification", "regression", "token", "qa")

    def candidate(self, pair, alpha: float):
        """The model "auto" scores at ``alpha``: the output mix of the teachers, α·z_pre + (1−α)·z_fine."""
        return OutputMixModel(pair.fine, pair.pre, alpha)

    def initial_student(self, pair, config: HybridConfig, alpha=None):
        """The trainable branch starts at θ_fine; its logits are mixed with θ_pre's, in the loss and at inference."""
        return copy.deepcopy(pair.fine)

    def inference_model(self, student, pair, config: HybridConfig, alpha=None):
        return OutputMixModel(student, pair.pre, config.alpha if alpha is None else alpha)
