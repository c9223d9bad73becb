"""Training and prediction on the Hugging Face `Trainer`, plus the run-level measurements (time, peak memory).

`TrainingArguments` are built in one place (`training_arguments`) so every stage of every method gets the same
ecosystem behaviour: DDP when launched under torchrun (gloo on CPU), mixed precision and checkpointing options from
the arguments, tqdm progress bars, seeded and deterministic on CPU. `fit` trains one stage and reports its wall
time, throughput and whether the loss stayed finite; `predict` returns raw outputs aligned with the feature rows,
in the shapes `Task.compute_metrics` expects.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


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

    def __post_init__(self) -> None:
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
    """What one training stage cost and how it ended."""

    train_time_s: float
    samples: int  # training samples processed (features × epochs)
    training_loss: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.train_time_s if self.train_time_s > 0 else float("nan")

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.training_loss)


def _distributed_cpu() -> bool:
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def training_arguments(
    spec: TrainSpec, output_dir: Path | str, *, progress: bool, eval_batch_size: int = 64, **overrides
):
    """`TrainingArguments` for one stage: no reports, no checkpoints, NaN losses kept visible, CPU when no CUDA."""
    from transformers import TrainingArguments

    kwargs = dict(
        output_dir=str(output_dir),
        learning_rate=spec.learning_rate,
        num_train_epochs=spec.epochs,
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=eval_batch_size,
        weight_decay=spec.weight_decay,
        warmup_ratio=spec.warmup_ratio,
        lr_scheduler_type=spec.lr_scheduler_type,
        max_grad_norm=spec.max_grad_norm,
        seed=spec.seed,
        data_seed=spec.seed,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=50,
        logging_nan_inf_filter=False,  # a diverged run must show a non-finite training loss
        disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        ddp_backend="gloo" if _distributed_cpu() else None,
        ddp_find_unused_parameters=False,
        log_level="warning",
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _quiet(trainer, progress: bool) -> None:
    """Without progress bars, Trainer prints every log dict instead; keep the console quiet then."""
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)


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
    **trainer_kwargs,
) -> FitResult:
    """Train ``model`` in place on ``features`` with a (subclass of) `Trainer`; returns time, samples and loss."""
    from transformers import Trainer

    trainer_cls = trainer_cls or Trainer
    args = training_arguments(spec, output_dir, progress=progress, **(args_overrides or {}))
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=features,
        data_collator=collator,
        callbacks=list(callbacks),
        **trainer_kwargs,
    )
    _quiet(trainer, progress)
    start = time.perf_counter()
    output = trainer.train()
    elapsed = time.perf_counter() - start
    samples = round(len(features) * spec.epochs)
    return FitResult(train_time_s=elapsed, samples=samples, training_loss=float(output.training_loss))


def predict(model, features, collator, *, batch_size: int, output_dir, progress: bool):
    """Raw model outputs on ``features`` as numpy (logits, or (start, end) for QA), row-aligned with them."""
    from transformers import Trainer

    spec = TrainSpec(learning_rate=1.0, epochs=1.0, batch_size=1, seed=0)
    args = training_arguments(spec, output_dir, progress=progress, eval_batch_size=batch_size)
    trainer = Trainer(model=model, args=args, data_collator=collator)
    _quiet(trainer, progress)
    output = trainer.predict(features)
    return output.predictions


class PeakMemory:
    """Peak memory of a block in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` over the block (tensors only). CPU: the largest increase of the
    process's resident set size (psutil RSS) over its value at entry, sampled every ``interval_s`` by a background
    thread, so a peak shorter than the interval can be missed and memory freed by Python but kept by the allocator
    still counts.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_mb = float("nan")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cuda = torch.cuda.is_available()

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
            return self
        import psutil

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
        self._stop.set()
        self._thread.join()


def to_numpy_predictions(predictions):
    """Trainer outputs as float32 numpy arrays (a tuple stays a tuple)."""
    if isinstance(predictions, (tuple, list)):
        return tuple(np.asarray(p, dtype=np.float32) for p in predictions)
    return np.asarray(predictions, dtype=np.float32)
