"""Training and prediction on the Hugging Face `Trainer`, plus the run-level measurements (time, peak memory).

`TrainingArguments` are built in one place (`training_arguments`) so every stage of every method gets the same
ecosystem behaviour: DDP when launched under torchrun (gloo on CPU), mixed precision and checkpointing options from
the arguments, tqdm progress bars, seeded and deterministic on CPU. `fit` trains one stage and reports its wall
time, throughput and whether the loss stayed finite; `predict` returns raw outputs aligned with the feature rows,
in the shapes `Task.compute_metrics` expects.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from hybridft.batching import BATCHING_MODES, BucketedSampler, feature_lengths, longest_first
from hybridft.compute import batch_loss_rows, batch_tokens, training_flops
from hybridft.hf_compat import logging_dir_arguments, tensorboard_dir, warmup_arguments


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation settings of one training stage (what `TrainingArguments` needs beyond paths and flags)."""

    learning_rate: float
    epochs: float
    batch_size: int
    seed: int
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_scheduler_type: str = "linear"
    max_grad_norm: float = 1.0
    batching: str = "bucketed"  # hybridft.batching: length-bucketed batches in shuffled order, or "random"

    def __post_init__(self) -> None:
        if self.batching not in BATCHING_MODES:
            raise ValueError(f"batching must be one of {BATCHING_MODES}, got {self.batching!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a positive finite number, got {self.learning_rate}")
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass(frozen=True)
class FitResult:
    """What one stage cost and how it ended (a forward-only stage, such as teacher logits, has ``tokens`` 0).

    ``tokens``: non-padding tokens through forward + backward; ``forward_tokens``: through forward only;
    ``flops``: estimated as in `hybridft.compute`; ``curve``: the training loss as ((step, loss), ...).
    """

    train_time_s: float
    samples: int  # training samples processed (features × epochs)
    training_loss: float
    stage: str = ""
    tokens: int = 0
    forward_tokens: int = 0
    optimizer_steps: int = 0
    flops: float = 0.0
    curve: tuple = ()

    def __post_init__(self) -> None:  # a curve read back from JSON is a list of lists
        object.__setattr__(self, "curve", tuple((int(s), float(v)) for s, v in self.curve))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["curve"] = [list(point) for point in self.curve]
        return data

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_time_s if self.train_time_s > 0 else float("nan")

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.training_loss)


# Log the training loss every 5 % of a stage's steps (a ratio, as TrainingArguments allows): ~20 points per curve.
LOGGING_STEPS = 0.05


def _distributed_cpu() -> bool:
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def training_arguments(
    spec: TrainSpec,
    output_dir: Path | str,
    *,
    progress: bool,
    eval_batch_size: int = 64,
    args_class=None,
    **overrides,
):
    """`TrainingArguments` for one stage: no reports, no checkpoints, NaN losses kept visible, CPU when no CUDA.
    ``args_class``: a subclass to build instead (`HybridTrainingArguments`, whose own fields go in ``overrides``)."""
    kwargs = dict(
        output_dir=str(output_dir),
        learning_rate=spec.learning_rate,
        num_train_epochs=spec.epochs,
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=eval_batch_size,
        weight_decay=spec.weight_decay,
        **warmup_arguments(spec.warmup_ratio),
        lr_scheduler_type=spec.lr_scheduler_type,
        max_grad_norm=spec.max_grad_norm,
        seed=spec.seed,
        data_seed=spec.seed,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=LOGGING_STEPS,
        logging_nan_inf_filter=False,  # a diverged run must show a non-finite training loss
        disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        ddp_backend="gloo" if _distributed_cpu() else None,
        ddp_find_unused_parameters=False,
        log_level="warning",
    )
    kwargs.update(overrides)
    return (args_class or TrainingArguments)(**kwargs)


def _quiet(trainer, progress: bool) -> None:
    """Without progress bars, Trainer prints every log dict instead; keep the console quiet then."""
    if not progress:
        trainer.remove_callback(PrinterCallback)


class MeasuredTrainer:
    """Mixed in before a `Trainer` (sub)class (`measured_trainer_class`; `HybridTrainer` has it): counts the
    non-padding tokens it trains on (`counted_tokens`) and a causal LM's loss rows (`counted_loss_rows`), and, with ``batching="bucketed"``, draws its training batches
    from the length-bucketed sampler (`hybridft.batching.BucketedSampler`) over its ``train_dataset``.

    ``batching``: "random" (the `Trainer`'s own sampler) or "bucketed", a constructor argument."""

    def __init__(self, *args, batching: str = "random", **kwargs):
        if batching not in BATCHING_MODES:
            raise ValueError(f"batching must be one of {BATCHING_MODES}, got {batching!r}")
        self.batching = batching
        self.trained_tokens = 0  # a tensor once training starts: no host sync per step
        self.trained_loss_rows = 0
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        # The Trainer's sampler hook (TRL's trainers override it too); only "bucketed" replaces it.
        if self.batching != "bucketed":
            return super()._get_train_sampler(train_dataset)
        return BucketedSampler(feature_lengths(self.train_dataset), self._train_batch_size, self.args.seed)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.trained_tokens = self.trained_tokens + batch_tokens(inputs)
        self.trained_loss_rows = self.trained_loss_rows + batch_loss_rows(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def _summed(self, count) -> int:
        value = torch.as_tensor(count, dtype=torch.long, device=self.args.device).reshape(())
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(value)
        return int(value.item())

    def counted_tokens(self) -> int:
        """Non-padding tokens trained on, over every process of a distributed run."""
        return self._summed(self.trained_tokens)

    def counted_loss_rows(self) -> int:
        """Positions whose next token carries a label (`hybridft.compute.batch_loss_rows`; 0 without per-token
        labels), over every process of a distributed run."""
        return self._summed(self.trained_loss_rows)


def _loss_curve_callback(curve: list):
    class LossCurve(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                curve.append((int(state.global_step), float(logs["loss"])))

    return LossCurve()


def measured_trainer_class(trainer_cls):
    """``trainer_cls`` with `MeasuredTrainer` mixed in (once)."""
    if issubclass(trainer_cls, MeasuredTrainer):
        return trainer_cls
    return type(f"Measured{trainer_cls.__name__}", (MeasuredTrainer, trainer_cls), {})


def fit(
    model,
    features,
    collator,
    spec: TrainSpec,
    *,
    output_dir,
    progress: bool,
    trainer_cls=None,
    callbacks=(),
    args_overrides=None,
    log_dir=None,
    stage: str = "",
    **trainer_kwargs,
) -> FitResult:
    """Train ``model`` in place on ``features`` with a (subclass of) `Trainer`; returns its cost and loss.

    Batches follow ``spec.batching`` (`hybridft.batching`). ``log_dir``: write TensorBoard event files there.
    """
    trainer_cls = measured_trainer_class(trainer_cls or Trainer)
    overrides = dict(args_overrides or {})
    if log_dir is not None:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        overrides.setdefault("report_to", ["tensorboard"])
        overrides.update(logging_dir_arguments(str(log_dir)))
    args = training_arguments(spec, output_dir, progress=progress, **overrides)
    with tensorboard_dir(None if log_dir is None else str(log_dir)):
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=features,
            data_collator=collator,
            callbacks=list(callbacks),
            batching=spec.batching,
            **trainer_kwargs,
        )
    return train_measured(trainer, progress=progress, stage=stage)


def train_measured(trainer, *, progress: bool, stage: str) -> FitResult:
    """Train a `MeasuredTrainer` on its ``train_dataset``, in its ``batching`` order (`hybridft.batching`), and
    return the stage's cost, loss and loss curve. `fit` and the ``hybridft train``
    command's hybrid student both train through this."""
    features = trainer.train_dataset
    curve: list[tuple[int, float]] = []
    trainer.add_callback(_loss_curve_callback(curve))
    _quiet(trainer, progress)
    start = time.perf_counter()
    output = trainer.train()
    elapsed = time.perf_counter() - start
    tokens = trainer.counted_tokens()
    return FitResult(
        train_time_s=elapsed,
        samples=round(len(features) * trainer.args.num_train_epochs),
        training_loss=float(output.training_loss),
        stage=stage,
        tokens=tokens,
        optimizer_steps=int(trainer.state.global_step),
        flops=training_flops(trainer.model, tokens, trainer.counted_loss_rows()),
        curve=tuple(curve),
    )


def predict(model, features, collator, *, batch_size: int, output_dir, progress: bool, by_length: bool = True):
    """Raw model outputs on ``features`` as numpy (logits, or (start, end) for QA), row-aligned with them.

    ``by_length``: batches are formed longest first over the features sorted by length (less padding per batch;
    for short sets about half the padded tokens), and the outputs are put back in the features' order."""
    spec = TrainSpec(learning_rate=1.0, epochs=1.0, batch_size=1, seed=0)
    args = training_arguments(spec, output_dir, progress=progress, eval_batch_size=batch_size)
    trainer = Trainer(model=model, args=args, data_collator=collator)
    _quiet(trainer, progress)
    if not by_length or len(features) < 2 or "input_ids" not in features.column_names:
        return trainer.predict(features).predictions
    order = longest_first(feature_lengths(features))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    predictions = trainer.predict(features.select(order.tolist())).predictions
    if isinstance(predictions, (tuple, list)):
        return type(predictions)(np.asarray(p)[inverse] for p in predictions)
    return np.asarray(predictions)[inverse]


class PeakMemory:
    """Peak memory of a block in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` over the block (tensors only). CPU, only with ``cpu=True``: the
    largest increase of the process's resident set size (psutil RSS) over its value at entry, sampled every
    ``interval_s`` by a background thread. That number means something only in a process that runs this block and
    nothing else (a run's own worker process, entered after the imports): in a long-lived process the allocator
    keeps memory freed by earlier runs, so the rise depends on run order. With ``cpu=False`` (the default) the CPU
    peak is None, not measured.
    """

    def __init__(self, interval_s: float = 0.02, *, cpu: bool = False) -> None:
        self.interval_s = interval_s
        self.peak_mb: float | None = None
        self.source: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cuda = torch.cuda.is_available()
        self._cpu = cpu

    def _sample(self, process, start: int) -> None:
        peak = 0
        while not self._stop.is_set():
            peak = max(peak, process.memory_info().rss - start)
            self._stop.wait(self.interval_s)
        peak = max(peak, process.memory_info().rss - start)
        self.peak_mb = peak / 2**20

    def __enter__(self) -> PeakMemory:
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
            self.source = "cuda_max_memory_allocated"
            return self
        if not self._cpu:
            return self
        self.source = "process_rss_rise"

        process = psutil.Process()
        start = process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, args=(process, start), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._cuda:
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()


def to_numpy_predictions(predictions):
    """Trainer outputs as float32 numpy arrays (a tuple stays a tuple)."""
    if isinstance(predictions, (tuple, list)):
        return tuple(np.asarray(p, dtype=np.float32) for p in predictions)
    return np.asarray(predictions, dtype=np.float32)
