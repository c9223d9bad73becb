"""One run of one method on one task: `RunConfig` → `run_experiment` → a result dict; and the WiSE-FT `alpha_sweep`.

Data: the task's train split subset to ``train_size`` with the run's seed (so methods compared at one seed see the
same examples) and its main eval split subset to ``eval_size`` with the fixed seed `EVAL_SUBSET_SEED` (so every run
is scored on the same examples). Measurements:

- ``train_time_s``: wall time of every training stage of the method, stages loaded from the cache counted at the
  cost recorded when they were computed (a warm cache does not make a method look cheaper).
- ``train_samples_per_s``: throughput of the method's own (last) training stage.
- ``peak_memory_mb``: over training and evaluation; on CUDA ``torch.cuda.max_memory_allocated``, on CPU the peak
  increase of the process's resident set size sampled by a background thread (see `hybridft.training.PeakMemory`).
- ``trainable_params``: of the stage the method trains; ``total_params``: every weight used at inference (both
  models for ``hybrid_output``).
- ``status``: "diverged" when a training loss was non-finite; metrics are still computed when possible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVAL_SUBSET_SEED = 0
DEFAULT_ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run; ``config_hash`` identifies it (``data_dir`` excluded: same data, other path)."""

    task: str
    method: str
    seed: int
    model: str
    train_size: int | None = None
    eval_size: int | None = None
    max_length: int = 128
    epochs: float = 1.0
    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float | None = None  # None → the method's default
    method_args: tuple[tuple[str, object], ...] = ()  # overrides of the method config's fields
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.method_args, dict):
            object.__setattr__(self, "method_args", tuple(sorted(self.method_args.items())))
        for name in ("task", "method", "model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"RunConfig.{name} must be a non-empty string, got {getattr(self, name)!r}")
        for name in ("train_size", "eval_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"RunConfig.{name} must be None or an integer >= 1, got {value!r}")
        for name in ("max_length", "batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"RunConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not self.epochs > 0:
            raise ValueError(f"RunConfig.epochs must be > 0, got {self.epochs}")
        if self.learning_rate is not None and not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"RunConfig.learning_rate must be None or a positive number, got {self.learning_rate}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["method_args"] = [list(pair) for pair in self.method_args]
        return data

    def config_hash(self) -> str:
        data = self.to_dict()
        del data["data_dir"]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=repr)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class PreparedData:
    """The task, tokenizer, preprocessed train and eval features, eval examples and subset descriptions."""

    task: Any
    tokenizer: Any
    train_features: Any
    eval_features: Any
    eval_examples: Any
    subsets: dict[str, dict]
    data_key: dict


def qa_stride(max_length: int) -> int:
    """Overlap of QA windows: half the window, at most 64 tokens (the task default at max_length 128)."""
    return min(64, max_length // 2)


def prepare_data(cfg: RunConfig) -> PreparedData:
    """Load, subset and preprocess the train and main eval splits of ``cfg.task`` for ``cfg.model``'s tokenizer."""
    from hybridft.data import subset
    from hybridft.models import load_tokenizer
    from hybridft.tasks import get_task

    task = get_task(cfg.task)
    tokenizer = load_tokenizer(cfg.model)
    train, train_info = subset(
        task.load(task.train_split, cfg.data_dir), cfg.train_size, cfg.seed, task=task.name, split=task.train_split
    )
    examples, eval_info = subset(
        task.load(task.eval_split, cfg.data_dir), cfg.eval_size, EVAL_SUBSET_SEED, task=task.name, split=task.eval_split
    )
    stride = qa_stride(cfg.max_length)
    train_features = task.preprocess(train, tokenizer, max_length=cfg.max_length, train=True, stride=stride)
    eval_features = task.preprocess(examples, tokenizer, max_length=cfg.max_length, train=False, stride=stride)
    data_key = {
        "task": task.name,
        "subset": train_info.to_dict(),
        "max_length": cfg.max_length,
        "stride": stride,
        "tokenizer": cfg.model if cfg.model in ("tiny-bert", "minilm") else tokenizer.name_or_path,
    }
    subsets = {"train": train_info.to_dict(), "eval": eval_info.to_dict()}
    return PreparedData(task, tokenizer, train_features, eval_features, examples, subsets, data_key)


def evaluate(model, data: PreparedData, cfg: RunConfig, work_dir: Path, progress: bool) -> dict[str, float]:
    """The task's metrics of ``model`` on the prepared eval split."""
    from hybridft.training import predict, to_numpy_predictions

    predictions = predict(
        model,
        data.eval_features,
        data.task.collator(data.tokenizer),
        batch_size=cfg.eval_batch_size,
        output_dir=work_dir / "eval",
        progress=progress,
    )
    metrics = data.task.compute_metrics(to_numpy_predictions(predictions), data.eval_features, data.eval_examples)
    return {key: float(value) for key, value in metrics.items()}


def train_context(cfg, data: PreparedData, work_dir: Path, cache_dir: Path, progress: bool):
    from hybridft.methods import TrainContext

    return TrainContext(
        run=cfg,
        task=data.task,
        tokenizer=data.tokenizer,
        train_features=data.train_features,
        data_key=data.data_key,
        work_dir=work_dir,
        cache_dir=cache_dir,
        progress=progress,
    )


def run_experiment(cfg: RunConfig, *, work_dir: Path, cache_dir: Path, progress: bool = True) -> dict:
    """Train ``cfg.method`` on ``cfg.task`` and evaluate it; see the module docstring for what is measured."""
    from hybridft.methods import get_method
    from hybridft.training import PeakMemory

    method = get_method(cfg.method)
    config = method.make_config(cfg.method_args, cfg.learning_rate)  # fail on bad arguments before loading data
    work_dir, cache_dir = Path(work_dir), Path(cache_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cfg)
    ctx = train_context(cfg, data, work_dir, cache_dir, progress)
    with PeakMemory() as memory:
        trained = method.train(ctx, config)
        start = time.perf_counter()
        try:
            metrics = evaluate(trained.model, data, cfg, work_dir, progress)
        except Exception:
            if not trained.diverged:
                raise
            metrics = {}  # a diverged model's outputs may not decode; the run is still recorded
        eval_time = time.perf_counter() - start
    headline_key = data.task.headline
    return {
        "metrics": metrics,
        "headline_metric": headline_key,
        "headline": metrics.get(headline_key, float("nan")),
        "trainable_params": trained.trainable_params,
        "total_params": trained.total_params,
        "train_time_s": trained.train_time_s,
        "eval_time_s": eval_time,
        "peak_memory_mb": memory.peak_mb,
        "train_samples_per_s": trained.fits[-1].samples_per_s,
        "subsets": data.subsets,
        "status": "diverged" if trained.diverged else "ok",
    }


def alpha_sweep(
    cfg: RunConfig, alphas=DEFAULT_ALPHAS, *, work_dir: Path, cache_dir: Path, progress: bool = True
) -> list[dict]:
    """WiSE-FT curve: θ(α) = α·θ_pre + (1−α)·θ_fine evaluated at each α (no distillation).

    The teachers come from the (cached) LP and LP-FT stages configured by ``cfg.method``'s config, which must be a
    staged method (lp_ft, wise_ft, hybrid, kd_pre, kd_fine, hybrid_output).
    """
    from hybridft.interpolate import check_alpha, interpolate_models
    from hybridft.methods import get_method
    from hybridft.stages import StageFields, teachers

    alphas = [check_alpha(a) for a in alphas]
    config = get_method(cfg.method).make_config(cfg.method_args, cfg.learning_rate)
    if not isinstance(config, StageFields):
        raise ValueError(f"alpha_sweep needs a method with LP and LP-FT stages, not {cfg.method!r}")
    work_dir, cache_dir = Path(work_dir), Path(cache_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cfg)
    ctx = train_context(cfg, data, work_dir, cache_dir, progress)
    pair = teachers(ctx, config)
    curve = []
    for alpha in alphas:
        metrics = evaluate(interpolate_models(pair.pre, pair.fine, alpha), data, cfg, work_dir, progress)
        curve.append({"alpha": alpha, "metrics": metrics, "headline": metrics[data.task.headline]})
    return curve
