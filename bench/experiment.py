"""One run of one method on one task: `RunConfig` → `run_experiment` → a result dict; and the WiSE-FT `alpha_sweep`.

Data: the task's train split (less the dev split when ``dev_size`` is set) subset to ``train_size`` with the run's
seed (so methods compared at one seed see the same examples) and its main eval split subset to ``eval_size`` with the fixed seed `EVAL_SUBSET_SEED` (so every run
is scored on the same examples). Measurements:

- ``train_time_s``: wall time of every training stage of the method, stages loaded from the cache counted at the
  cost recorded when they were computed (a warm cache does not make a method look cheaper).
- ``train_samples_per_s``: throughput of the method's own (last) training stage.
- ``peak_memory_mb``: over training and evaluation; on CUDA ``torch.cuda.max_memory_allocated``; on CPU only when
  the run has a process of its own (``measure_cpu_memory``, the bench worker): the peak rise of its resident set
  size over its value after the imports; None otherwise (see `hybridft.fitting.PeakMemory`).
- ``train_tokens``, ``forward_tokens``, ``optimizer_steps``, ``train_flops``: summed over every stage, cached ones at
  their recorded cost (`hybridft.compute`); ``stages`` lists each stage, ``curves`` its training-loss series.
- ``majority_baseline``, ``failed_to_learn``, ``eval_stats``, ``prediction_share`` (classifiers only),
  ``collapsed``: see `bench.scoring`.
- ``teacher_scores``, ``weak_teacher``: for a method that builds teachers (`hybridft.teacher_quality`), and
  ``probe``: the linear probe's record (its L2 grid and choice, `hybridft.probe`).
- ``extra_metrics``: the task's extra evaluation splits (MNLI mismatched), same eval_size subset rule.
- ``shift_metrics``: per shift set of the run (`bench.shift`; a seeded ``shift_size`` subset): role, metrics,
  headline, majority baseline, failed_to_learn, eval_stats, prediction_share (classifiers), collapsed and subset;
  ``shift_skipped``: the registered sets whose file was not found; ``shift_eval_time_s``: loading, preprocessing and
  scoring them (not in ``eval_time_s``).
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

from bench import shift
from bench.data import subset
from bench.evaluation import evaluate, score, score_shift
from bench.methods import TrainContext, get_method
from bench.scoring import failed_to_learn, majority_baseline
from bench.splits import dev_examples, split_dev, training_features, unlabelled_rows
from bench.tasks import get_task
from bench.teacher_scores import bench_teacher_scores
from hybridft.alpha_search import DEFAULT_ALPHAS
from hybridft.batching import BATCHING_MODES
from hybridft.fitting import PeakMemory
from hybridft.interpolate import check_alpha, interpolate_models
from hybridft.methods.stages import teachers
from hybridft.models import load_tokenizer
from hybridft.task_kinds import qa_stride
from hybridft.teacher_quality import warn_if_weak
from hybridft.teachers import StageFields

EVAL_SUBSET_SEED = 0
EVAL_TARGETS = ("eval", "dev")


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
    batching: str = "bucketed"  # hybridft.batching: "bucketed" (length-bucketed, shuffled batch order) or "random"
    dev_size: int | None = None  # examples held out of the train split as the dev split (None: no dev split)
    eval_on: str = "eval"  # "eval": the task's evaluation split; "dev": the dev split (learning-rate sweeps)
    # Evaluation-only shift sets (bench.shift): registered names or "NAME=PATH"; None → every registered set of
    # the task (none with eval_on="dev"). shift_size: a seeded subset of each set (None: the whole set).
    shifts: tuple[str, ...] | None = None
    shift_size: int | None = None
    data_dir: str | None = None
    shift_dir: str | None = None  # where relative shift paths live (default $HYBRIDFT_SHIFT_DIR, else data_dir)

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

        if self.batching not in BATCHING_MODES:
            raise ValueError(f"RunConfig.batching must be one of {BATCHING_MODES}, got {self.batching!r}")
        if self.dev_size is not None and (not isinstance(self.dev_size, int) or self.dev_size < 1):
            raise ValueError(f"RunConfig.dev_size must be None or an integer >= 1, got {self.dev_size!r}")
        if self.eval_on not in EVAL_TARGETS:
            raise ValueError(f"RunConfig.eval_on must be one of {EVAL_TARGETS}, got {self.eval_on!r}")
        if self.eval_on == "dev" and self.dev_size is None:
            raise ValueError("RunConfig.eval_on='dev' needs a dev split: set dev_size")
        self._resolve_shifts()

    def _resolve_shifts(self) -> None:
        if self.shift_size is not None and (not isinstance(self.shift_size, int) or self.shift_size < 1):
            raise ValueError(f"RunConfig.shift_size must be None or an integer >= 1, got {self.shift_size!r}")
        if self.shifts is None:
            specs = shift.default_specs(self.task) if self.eval_on == "eval" else ()
        elif isinstance(self.shifts, str):
            raise ValueError(f"RunConfig.shifts must be a list of set names or NAME=PATH specs, got {self.shifts!r}")
        else:
            specs = tuple(self.shifts)
            if specs and self.eval_on != "eval":
                raise ValueError("RunConfig.shifts: shift sets are scored only with eval_on='eval'")
        names = [shift.parse_spec(spec, self.task).name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"RunConfig.shifts names a set twice: {list(specs)}")
        object.__setattr__(self, "shifts", specs)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["method_args"] = [list(pair) for pair in self.method_args]
        data["shifts"] = list(self.shifts)
        return data

    def config_hash(self) -> str:
        """Hash of what defines the run: not the folders, and the shift fields only when a run has shift sets (so
        runs of tasks without any keep the hash they had before shift sets existed)."""
        data = self.to_dict()
        del data["data_dir"], data["shift_dir"]
        if not data["shifts"]:
            del data["shifts"]
            if data["shift_size"] is None:
                del data["shift_size"]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=repr)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class PreparedData:
    """The task, tokenizer, preprocessed train and eval features, eval examples and subset descriptions.

    ``extra_evals``: (split name, features, examples) of the task's extra evaluation splits (MNLI mismatched).
    ``shifts``: the run's shift sets that could be read, ``shift_skipped`` the names of those that could not.
    ``dev``: the dev split (``dev_size``) as `DevSplit`, None without one.
    """

    task: Any
    tokenizer: Any
    train_features: Any
    eval_features: Any
    eval_examples: Any
    subsets: dict[str, dict]
    data_key: dict
    extra_evals: list = dataclasses.field(default_factory=list)
    shifts: list[PreparedShift] = dataclasses.field(default_factory=list)
    shift_skipped: list[str] = dataclasses.field(default_factory=list)
    shift_prepare_s: float = 0.0
    dev: DevSplit | None = None


@dataclass
class DevSplit:
    """The dev split held out of the train split: preprocessed for training (labels, as the probe's held-out rows)
    and for evaluation (``features``, ``examples``: what the task's metrics read)."""

    train_features: Any
    features: Any
    examples: Any


@dataclass
class PreparedShift:
    """One shift set of a run: its description, preprocessed features, examples and subset."""

    shift: Any  # bench.shift.ShiftSet
    features: Any
    examples: Any
    subset: dict


_SKIP_NOTICES: set[tuple[str, str]] = set()


def prepare_shifts(cfg: RunConfig, task, features) -> tuple[list[PreparedShift], list[str]]:
    """The run's shift sets, subset to ``cfg.shift_size`` (seed `EVAL_SUBSET_SEED`) and preprocessed, and the
    names of the registered ones whose file is not there (one printed line per folder and task says so)."""
    if not cfg.shifts:
        return [], []
    root = shift.shift_root(cfg.data_dir, cfg.shift_dir)
    prepared, skipped = [], []
    for spec in cfg.shifts:
        entry = shift.parse_spec(spec, task.name)
        raw = shift.load(entry, task, root)
        if raw is None:
            skipped.append(entry.name)
            continue
        examples, info = subset(raw, cfg.shift_size, EVAL_SUBSET_SEED, task=task.name, split=f"shift:{entry.name}")
        prepared.append(PreparedShift(entry, features(examples), examples, info.to_dict()))
    if skipped and (str(root), task.name) not in _SKIP_NOTICES:
        _SKIP_NOTICES.add((str(root), task.name))
        where = f"in {root}" if root is not None else f"(no local folder: set --data-dir or ${shift.SHIFT_DIR_ENV})"
        print(f"shift sets of {task.name} skipped, files not found {where}: {', '.join(skipped)}", flush=True)
    return prepared, skipped


def prepare_data(cfg: RunConfig) -> PreparedData:
    """Load, subset and preprocess the train and evaluation splits of ``cfg.task`` for ``cfg.model``'s tokenizer.

    With ``cfg.dev_size`` the dev split is held out of the train split first and the training subset is drawn from
    the rest; ``cfg.eval_on="dev"`` scores on it instead of the evaluation split (and skips the extra splits).
    """
    task = get_task(cfg.task)
    tokenizer = load_tokenizer(cfg.model, task)
    pool, dev, dev_info = split_dev(
        task.load(task.train_split, cfg.data_dir), cfg.dev_size, cfg.seed, task=task.name, split=task.train_split
    )
    train_features, train_info, data_key = training_features(cfg, task, tokenizer, pool)
    stride = qa_stride(cfg.max_length)

    def features(examples):
        return task.preprocess(examples, tokenizer, max_length=cfg.max_length, train=False, stride=stride)

    if cfg.eval_on == "dev":
        eval_splits = [("dev", dev)]
    else:
        eval_splits = [(split, task.load(split, cfg.data_dir)) for split in (task.eval_split, *task.extra_eval_splits)]
    scored = []
    for split, raw in eval_splits:
        examples, info = subset(raw, cfg.eval_size, EVAL_SUBSET_SEED, task=task.name, split=split)
        scored.append((split, features(examples), examples, info))
    subsets = {"train": train_info.to_dict(), "eval": scored[0][3].to_dict()}
    if dev_info is not None:
        subsets["dev"] = dev_info.to_dict()
    for split, _, _, info in scored[1:]:
        subsets[split] = info.to_dict()
    extra = [(split, f, e) for split, f, e, _ in scored[1:]]
    _, eval_features, eval_examples, _ = scored[0]
    start = time.perf_counter()
    shifts, skipped = prepare_shifts(cfg, task, features)
    shift_time = time.perf_counter() - start
    dev_split = None
    if dev is not None:
        dev_train = task.preprocess(dev, tokenizer, max_length=cfg.max_length, train=True, stride=stride)
        dev_split = DevSplit(dev_train, features(dev), dev)
    return PreparedData(task, tokenizer, train_features, eval_features, eval_examples, subsets, data_key, extra,
                        shifts, skipped, shift_time, dev_split)  # fmt: skip


def train_context(cfg, data: PreparedData, work_dir: Path, cache_dir: Path, progress: bool, log_dir=None):
    return TrainContext(
        run=cfg,
        task=data.task,
        tokenizer=data.tokenizer,
        train_features=data.train_features,
        data_key=data.data_key,
        work_dir=work_dir,
        cache_dir=cache_dir,
        progress=progress,
        log_dir=log_dir,
        # the probe chooses its L2 strength on the dev split, unless the run is scored there (a learning-rate sweep):
        # then by cross-validation, so nothing is chosen on the split that scores the run
        dev_features=None if data.dev is None or cfg.eval_on == "dev" else data.dev.train_features,
        dev_split=None if cfg.dev_size is None else lambda: dev_examples(cfg, data.task, data.tokenizer),
        score=lambda model, features, examples, scratch: score(
            model, data.task, data.tokenizer, features, examples, cfg, scratch, progress
        ),
        unlabelled=lambda split, size: unlabelled_rows(cfg, data.task, split, size),
    )


def compute_fields(fits) -> dict[str, Any]:
    """The run record's compute: sums over every stage (cached ones at their recorded cost), and each stage."""
    return {
        "train_tokens": sum(f.tokens for f in fits),
        "forward_tokens": sum(f.forward_tokens for f in fits),
        "optimizer_steps": sum(f.optimizer_steps for f in fits),
        "train_flops": float(sum(f.flops for f in fits)),
        "stages": [{k: v for k, v in f.to_dict().items() if k != "curve"} for f in fits],
        "curves": {f.stage or f"stage{i}": [list(p) for p in f.curve] for i, f in enumerate(fits) if f.curve},
    }


def run_experiment(
    cfg: RunConfig,
    *,
    work_dir: Path,
    cache_dir: Path,
    progress: bool = True,
    log_dir: Path | None = None,
    measure_cpu_memory: bool = False,
) -> dict:
    """Train ``cfg.method`` on ``cfg.task`` and evaluate it; see the module docstring for what is measured.

    ``log_dir``: TensorBoard event files of every stage this run trains go to ``log_dir/<stage>``.
    ``measure_cpu_memory``: this process runs this run only (a worker), so its RSS rise is the run's peak.
    """
    method = get_method(cfg.method)
    config = method.make_config(cfg.method_args, cfg.learning_rate)  # fail on bad arguments before loading data
    method.check_run(get_task(cfg.task), config)
    work_dir, cache_dir = Path(work_dir), Path(cache_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(cfg)
    ctx = train_context(cfg, data, work_dir, cache_dir, progress, log_dir)
    stats, extra_metrics, shift_metrics = {"eval_stats": None, "collapsed": None}, {}, {}
    shift_time = data.shift_prepare_s
    with PeakMemory(cpu=measure_cpu_memory) as memory:
        trained = method.train(ctx, config)
        start = time.perf_counter()
        try:
            metrics, stats = score(trained.model, data.task, data.tokenizer, data.eval_features, data.eval_examples,
                                   cfg, work_dir, progress, with_stats=True)  # fmt: skip
            for split, features, examples in data.extra_evals:
                extra_metrics[split] = score(
                    trained.model, data.task, data.tokenizer, features, examples, cfg, work_dir, progress
                )
            eval_time = time.perf_counter() - start
            for prepared in data.shifts:
                shift_metrics[prepared.shift.name] = score_shift(trained.model, data, prepared, cfg, work_dir,
                                                                 progress)  # fmt: skip
            shift_time += time.perf_counter() - start - eval_time
        except Exception:
            if not trained.diverged:
                raise
            metrics = {}  # a diverged model's outputs may not decode; the run is still recorded
            eval_time = time.perf_counter() - start
    headline_key = data.task.headline
    headline = metrics.get(headline_key, float("nan"))
    baseline = majority_baseline(data.task, data.eval_features, data.eval_examples)
    teacher_fields = {}
    if trained.teachers is not None and data.task.kind != "causal_lm":
        scores = bench_teacher_scores(trained.teachers, data, cfg, work_dir, progress)
        teacher_fields = {"teacher_scores": scores, "weak_teacher": warn_if_weak(scores, f"{cfg.method} on "
                          f"{cfg.task}, seed {cfg.seed}")}  # fmt: skip
        if trained.teachers.probe is not None:
            teacher_fields["probe"] = dict(trained.teachers.probe)
    return {
        "metrics": metrics,
        "headline_metric": headline_key,
        "headline": headline,
        "majority_baseline": baseline,
        "failed_to_learn": failed_to_learn(headline, baseline),
        "extra_metrics": extra_metrics,
        "shift_metrics": shift_metrics,
        "shift_skipped": data.shift_skipped,
        "shift_eval_time_s": shift_time,
        **stats,
        "trainable_params": trained.trainable_params,
        "total_params": trained.total_params,
        "train_time_s": trained.train_time_s,
        "eval_time_s": eval_time,
        "peak_memory_mb": memory.peak_mb,
        "peak_memory_source": memory.source,
        "train_samples_per_s": trained.fits[-1].samples_per_s if trained.fits else float("nan"),  # zero_shot: none
        "subsets": data.subsets,
        "method_extra": dict(trained.extra),
        **compute_fields(trained.fits),
        **teacher_fields,
        "status": "diverged" if trained.diverged else "ok",
    }


def alpha_sweep(
    cfg: RunConfig, alphas=DEFAULT_ALPHAS, *, work_dir: Path, cache_dir: Path, progress: bool = True
) -> list[dict]:
    """WiSE-FT curve: θ(α) = α·θ_pre + (1−α)·θ_fine evaluated at each α (no distillation), on the evaluation
    split and (``shift`` of each point, without eval_stats) on the run's shift sets.

    The teachers come from the (cached) LP and LP-FT stages configured by ``cfg.method``'s config, which must be a
    staged method (lp_ft, wise_ft, hybrid, kd_pre, kd_fine, hybrid_output).
    """
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
        model = interpolate_models(pair.pre, pair.fine, alpha)
        metrics = evaluate(model, data, cfg, work_dir, progress)
        point = {"alpha": alpha, "metrics": metrics, "headline": metrics[data.task.headline]}
        if data.shifts:
            point["shift"] = {p.shift.name: score_shift(model, data, p, cfg, work_dir, progress, with_stats=False)
                              for p in data.shifts}  # fmt: skip
        curve.append(point)
    return curve
