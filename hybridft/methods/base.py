"""What every method shares: its config base class, what it is handed (`TrainContext`) and what it returns (`Trained`).

A method is a `Method` subclass with a ``name``, a ``config_class`` (a frozen dataclass that validates itself) and a
``train(ctx, config) -> Trained``. Hyperparameter defaults live in the config classes, with the paper they come
from; ``RunConfig.learning_rate`` overrides the field named by ``Method.lr_field`` (the learning rate of the stage
the method itself trains), and ``RunConfig.method_args`` override any field by name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from hybridft.fitting import FitResult, TrainSpec
from hybridft.models import build_model
from hybridft.teachers import FULL_FT_LR, FULL_FT_WARMUP, FULL_FT_WEIGHT_DECAY


@dataclass(frozen=True)
class MethodConfig:
    """Optimisation fields every method has; subclasses add their own and extend `validate`."""

    learning_rate: float = FULL_FT_LR
    weight_decay: float = FULL_FT_WEIGHT_DECAY
    warmup_ratio: float = FULL_FT_WARMUP
    # fields a config once had → what replaces each (an override naming one is refused with that text)
    removed_fields: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("learning_rate",):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{type(self).__name__}.{name} must be a positive finite number, got {value!r}")
        if self.weight_decay < 0:
            raise ValueError(f"{type(self).__name__}.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"{type(self).__name__}.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any]) -> MethodConfig:
        """The defaults with ``overrides`` applied; an unknown name raises ValueError listing the known ones."""
        known = [f.name for f in dataclasses.fields(cls)]
        removed = sorted(set(overrides) & set(cls.removed_fields))
        if removed:
            raise ValueError(f"{cls.__name__}.{removed[0]} was removed: {cls.removed_fields[removed[0]]}")
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"{cls.__name__} has no field {unknown[0]!r}; known fields: {', '.join(known)}")
        return cls(**dict(overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainContext:
    """Everything a method needs to train on one task: data, model spec, where to write, how long."""

    run: Any  # the RunConfig (task, model, seed, epochs, batch sizes, max_length, ...)
    task: Any  # bench.tasks.Task
    tokenizer: Any
    train_features: Any  # datasets.Dataset, task.preprocess(train=True)
    data_key: dict  # identifies the training features: task, split subset fingerprint, preprocessing
    work_dir: Path
    cache_dir: Path
    progress: bool = True
    log_dir: Path | None = None  # TensorBoard event files go to log_dir/<stage> when set
    # the dev split preprocessed for training (labels on): the probe chooses its L2 strength on it (None: by
    # cross-validation on the training features)
    dev_features: Any = None
    # What only the caller's data layer can do, set by the benchmark (`bench.experiment.train_context`); None where
    # the caller has none (the `hybridft train` command, which offers neither α='auto' nor unlabelled inputs):
    # - ``dev_split()`` → (examples, features) of the run's dev split, preprocessed for scoring (α='auto');
    # - ``score(model, features, examples, work_dir)`` → the task's metrics of ``model`` on them;
    # - ``unlabelled(split, size)`` → (rows, SubsetInfo): a seeded ``size`` subset of the task's split ``split``
    #   (the train split: the rows the run neither trains on nor holds out as dev).
    dev_split: Callable[[], tuple[Any, Any]] | None = None
    score: Callable[..., dict[str, float]] | None = None
    unlabelled: Callable[[str, int | None], tuple[Any, Any]] | None = None

    def fit_kwargs(self, stage: str) -> dict[str, Any]:
        """The keyword arguments of `hybridft.fitting.fit` that place one stage: scratch, logs, progress, name."""
        return {
            "output_dir": self.stage_dir(stage),
            "progress": self.progress,
            "log_dir": None if self.log_dir is None else Path(self.log_dir) / stage,
            "stage": stage,
        }

    def collator(self):
        return self.task.collator(self.tokenizer)

    def build_model(self) -> torch.nn.Module:
        return build_model(self.run.model, self.task, self.run.seed)

    def spec(
        self, learning_rate: float, epochs: float | None = None, *, weight_decay: float = 0.0, warmup_ratio: float = 0.0
    ) -> TrainSpec:
        """A `TrainSpec` with this run's batch size and seed; ``epochs`` None → the run's epochs."""
        return TrainSpec(
            learning_rate=learning_rate,
            epochs=self.run.epochs if epochs is None else epochs,
            batch_size=self.run.batch_size,
            seed=self.run.seed,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            batching=getattr(self.run, "batching", "bucketed"),
        )

    def stage_dir(self, name: str) -> Path:
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Trained:
    """A method's result: the model to evaluate and the cost of every stage that produced it.

    ``fits`` lists each training stage in order, including stages loaded from the cache (with the cost recorded
    when they were computed), so the total is the same whether or not the cache was warm. ``trainable_params`` are
    those of the stage the method itself trains; ``total_params`` count every weight used at inference.
    """

    model: torch.nn.Module
    fits: list[FitResult]
    trainable_params: int
    total_params: int
    extra: dict = field(default_factory=dict)
    # the method's teachers (`hybridft.teachers.Teachers`: θ_pre, θ_fine or None), scored into the record's
    # teacher_scores; None for a method that builds none
    teachers: Any = None

    @property
    def train_time_s(self) -> float:
        return sum(f.train_time_s for f in self.fits)

    @property
    def diverged(self) -> bool:
        return any(f.diverged for f in self.fits)


class Method:
    """Base of every method: a name, a config class, the config field RunConfig.learning_rate sets, and `train`."""

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    lr_field: ClassVar[str] = "learning_rate"
    # Task kinds the method applies to (None: every kind); `run_experiment` refuses the others up front.
    task_kinds: ClassVar[tuple[str, ...] | None] = None
    # The `hybridft train` command (`hybridft.user_runs`) offers the methods that say how it trains and saves them,
    # from this registry: ``command`` is "model" (the method trains, the model is saved), "adapter" (the adapter and
    # its base are saved), "merged" (LoRA merged into the weights) or "hybrid" (`HybridTrainer`); None: not offered
    # (``command_refusal`` says why, for a method users would ask for). ``about``: one line for its help;
    # ``command_fixed``: hybrid arguments the method pins (kd_pre: gamma 0). A subclass states its own.
    command: ClassVar[str | None] = None
    command_refusal: ClassVar[str | None] = None
    command_fixed: ClassVar[dict[str, float]] = {}
    about: ClassVar[str] = ""

    def supports(self, kind: str) -> bool:
        return self.task_kinds is None or kind in self.task_kinds

    def check_task(self, task) -> None:
        """ValueError naming the method, the task and the kinds it applies to, unless it supports the task's kind."""
        if not self.supports(task.kind):
            raise ValueError(
                f"method {self.name!r} does not apply to task {task.name!r} of kind {task.kind!r}; "
                f"it applies to: {', '.join(self.task_kinds)}"
            )

    def applies_to(self, task, config: MethodConfig) -> bool:
        """Whether the method, so configured, can run on ``task`` (its kind; a multi-task method: its task list).
        A benchmark matrix leaves out the cells where it cannot, and shows them as not applicable."""
        return self.supports(task.kind)

    def check_run(self, task, config: MethodConfig) -> None:
        """ValueError naming the method, the task and why, unless `applies_to`."""
        self.check_task(task)

    def make_config(self, method_args: Mapping[str, Any] = (), learning_rate: float | None = None) -> MethodConfig:
        overrides = dict(method_args)
        if learning_rate is not None:
            if self.lr_field in overrides and overrides[self.lr_field] != learning_rate:
                raise ValueError(
                    f"learning_rate={learning_rate} conflicts with method_args {self.lr_field}={overrides[self.lr_field]}"
                )
            overrides[self.lr_field] = learning_rate
        return self.config_class.from_overrides(overrides)

    def train(self, ctx: TrainContext, config: MethodConfig) -> Trained:  # pragma: no cover - abstract
        raise NotImplementedError
