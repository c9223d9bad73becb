"""`HybridTrainingArguments`: the Hugging Face `TrainingArguments` plus the hybrid method's own settings.

The fields below are the method card's knobs (docs/design.md §1) and the recipe of the teachers `HybridTrainer` builds
when it is given none. Each carries one ``help`` sentence, which the ``hybridft`` command turns into its flags' help.
The optimiser fields inherited from `TrainingArguments` (``learning_rate``, ``num_train_epochs``,
``per_device_train_batch_size``, ...) apply to the student; the teachers' stages have their own ``lp_*`` / ``ft_*``
fields, defaulting to the recipe the bench uses (`hybridft.methods.stages`, `hybridft.teachers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from hybridft.interpolate import check_alpha
from hybridft.loss_checks import BACKENDS as LOSS_BACKENDS
from hybridft.probe import DEFAULT_FOLDS, DEFAULT_L2_GRID
from hybridft.task_kinds import KINDS as TASK_TYPES
from hybridft.teachers import (
    FULL_FT_LR,
    FULL_FT_WARMUP,
    FULL_FT_WEIGHT_DECAY,
    REMOVED_LP_FIELDS,
    check_stage_fields,
    removed_field_error,
)


@dataclass
class HybridTrainingArguments(TrainingArguments):
    """`TrainingArguments` for `hybridft.trainer.HybridTrainer` (see the module docstring)."""

    alpha: float = field(
        default=0.5,
        metadata={"help": "Weight of the pretrained teacher in the student's start: θ_mix = α·θ_pre + (1−α)·θ_fine."},
    )
    beta: float = field(default=1.0, metadata={"help": "Weight of the KL term to the pretrained teacher (≥ 0)."})
    gamma: float = field(default=1.0, metadata={"help": "Weight of the KL term to the fine-tuned teacher (≥ 0)."})
    temperature: float = field(
        default=2.0, metadata={"help": "Softmax temperature T of both KL terms, which are scaled by T² (> 0)."}
    )
    ce_weight: float = field(
        default=1.0, metadata={"help": "Weight of the cross-entropy (MSE for regression) on the labelled rows (≥ 0)."}
    )
    loss_backend: str = field(
        default="auto", metadata={"help": f"Back end of the fused loss: one of {', '.join(LOSS_BACKENDS)}."}
    )
    task_type: str | None = field(
        default=None,
        metadata={"help": f"One of {', '.join(TASK_TYPES)}; inferred from the model's class when not given."},
    )
    teacher_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the built teachers and the teachers' cached outputs are kept, keyed by a hash of their "
            "inputs (default: $HYBRIDFT_CACHE_DIR, else ~/.cache/hybridft/trainer)."
        },
    )
    lp_l2_grid: list[float] = field(
        default_factory=lambda: list(DEFAULT_L2_GRID),
        metadata={
            "help": "Candidate L2 strengths of the linear probe that gives θ_pre its task head (a convex fit "
            "to convergence on the frozen encoder's features); one is chosen by cross-validation."
        },
    )
    lp_folds: int = field(
        default=DEFAULT_FOLDS, metadata={"help": "Cross-validation folds that choose the probe's L2 strength (>= 2)."}
    )
    # Removed with the convex probe: set, each is refused with what replaces it (REMOVED_LP_FIELDS).
    lp_learning_rate: float | None = field(default=None, metadata={"help": "Removed: see lp_l2_grid."})
    lp_epochs: float | None = field(default=None, metadata={"help": "Removed: see lp_l2_grid."})
    lp_weight_decay: float | None = field(default=None, metadata={"help": "Removed: see lp_l2_grid."})
    ft_learning_rate: float = field(
        default=FULL_FT_LR, metadata={"help": "Learning rate of the full fine-tune that builds θ_fine from θ_pre."}
    )
    ft_epochs: float | None = field(
        default=None, metadata={"help": "Epochs of the full fine-tune that builds θ_fine (default: num_train_epochs)."}
    )
    ft_weight_decay: float = field(
        default=FULL_FT_WEIGHT_DECAY, metadata={"help": "Weight decay of the full fine-tune that builds θ_fine."}
    )
    ft_warmup_ratio: float = field(
        default=FULL_FT_WARMUP, metadata={"help": "Warm-up fraction of the full fine-tune that builds θ_fine."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_loss_fields(self)
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise ValueError(f"HybridTrainingArguments.task_type must be None or one of {TASK_TYPES}, got "
                             f"{self.task_type!r}")  # fmt: skip
        for name in REMOVED_LP_FIELDS:
            if getattr(self, name) is not None:
                raise removed_field_error(type(self).__name__, name)
        check_stage_fields(self)
        self.lp_l2_grid = list(self.lp_l2_grid)

    def loss_kwargs(self) -> dict:
        """The keyword arguments of `hybrid_kd_loss` in weight-mix mode (the loss's own α, the output mix, is 0)."""
        return {"alpha": 0.0, "beta": self.beta, "gamma": self.gamma, "temperature": self.temperature,
                "ce_weight": self.ce_weight, "backend": self.loss_backend}  # fmt: skip


def check_loss_fields(settings) -> None:
    """ValueError naming the field of ``settings`` (a `HybridConfig` or `HybridTrainingArguments`) that is out of
    range: α ∉ [0, 1], β, γ or ce_weight < 0, T ≤ 0, an unknown loss back end. α must be a number here: the choices
    of `check_alpha_choice` are the bench method's (`HybridConfig` checks them itself)."""
    owner = type(settings).__name__
    if isinstance(settings.alpha, (str, list, tuple)):
        raise TypeError(
            f"{owner}.alpha must be a number in [0, 1], got {settings.alpha!r} ('auto', 'adamerging' and per-layer "
            "lists are options of the bench's hybrid methods, HybridConfig)"
        )
    check_alpha(settings.alpha)
    check_distill_fields(settings)


def check_distill_fields(settings) -> None:
    """`check_loss_fields` less α: β, γ, ce_weight, T and the loss back end."""
    owner = type(settings).__name__
    for name in ("beta", "gamma", "ce_weight"):
        if not getattr(settings, name) >= 0:
            raise ValueError(f"{owner}.{name} must be >= 0, got {getattr(settings, name)}")
    if not settings.temperature > 0:
        raise ValueError(f"{owner}.temperature must be > 0, got {settings.temperature}")
    if settings.loss_backend not in LOSS_BACKENDS:
        raise ValueError(f"{owner}.loss_backend must be one of {LOSS_BACKENDS}, got {settings.loss_backend!r}")
