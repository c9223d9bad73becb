"""Train on your own files: the pipeline behind ``hybridft train`` (`hybridft.cli` is its command line).

``train(TrainConfig(...))`` reads and checks the files (`hybridft.user_data`), tokenizes them, trains one method,
evaluates it and writes the output folder: ``model/``, a folder that ``AutoModelForSequenceClassification`` and
``AutoTokenizer`` load without hybridft (for ``--method adapter`` instead ``adapter/``, the AdapterHub adapter with
its head, and ``base/``, the frozen model it plugs into); ``metrics.json``; ``predictions.jsonl`` (each evaluation
row's label, prediction and logits, so a reloaded model can be checked against them); ``record.json`` (the
arguments, the data with its row counts and sha256, every training stage's cost, compute, provenance) and a model
card, ``README.md``. The folder is written under a temporary name beside it and renamed into place when complete,
so an interrupted run leaves no partial output behind; bad input raises `InputError` before any training.

``plain``, ``lora`` and ``adapter`` are the suite's own methods (`hybridft.methods`), the hybrid methods run
`hybridft.trainer.HybridTrainer`: what the benchmark measures is what this trains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, TrainingArguments

from hybridft import provenance
from hybridft.fitting import FitResult, TrainSpec, predict, train_measured, training_arguments
from hybridft.hf_compat import warmup_ratio
from hybridft.methods import TrainContext, Trained, get_method, method_names
from hybridft.methods.peft_methods import adapters_missing
from hybridft.models import build_model, count_parameters, load_tokenizer, model_path
from hybridft.teachers import FULL_FT_WARMUP, FULL_FT_WEIGHT_DECAY, REMOVED_LP_FIELDS
from hybridft.trainer import HybridTrainer
from hybridft.trainer_config import HybridTrainingArguments
from hybridft.user_data import (
    TASK_TYPES,
    Columns,
    InputError,
    Labels,
    check_labels,
    error_reason,
    infer_labels,
    load_table,
    quiet_datasets,
    tokenize,
)

EVAL_BATCH_SIZE = 64
_POSITIVE = (lambda v: v > 0, "a number > 0")
_NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
# The fields of HybridTrainingArguments that `hybridft train` offers as flags (alpha → --alpha, ce_weight →
# --ce-weight), with the range each must lie in (None: a path). Their help sentence and default are the field's own.
HYBRID_FLAGS = {
    "alpha": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "beta": _NON_NEGATIVE,
    "gamma": _NON_NEGATIVE,
    "temperature": _POSITIVE,
    "ce_weight": _NON_NEGATIVE,
    "lp_folds": (lambda v: v >= 2, "an integer >= 2"),
    "ft_epochs": _POSITIVE,
    "ft_learning_rate": _POSITIVE,
    "teacher_cache_dir": None,
}


# ------------------------------------------------------------------------------------------------------ train
@dataclass(frozen=True)
class UserTask:
    """The user's task in the shape the suite's methods and `hybridft.models.build_model` expect of a `Task`: a
    sequence-classification head sized by the labels."""

    labels: Labels
    name: ClassVar[str] = "custom"  # also the adapter's name for --method adapter

    @property
    def kind(self) -> str:
        return self.labels.task_type

    def model_class(self) -> type:
        return AutoModelForSequenceClassification

    def model_kwargs(self) -> dict[str, Any]:
        return self.labels.model_kwargs()

    def collator(self, tokenizer):
        return DataCollatorWithPadding(tokenizer)


@dataclass
class Job:
    """One ``train`` call's prepared inputs, handed to the method."""

    config: TrainConfig
    task: UserTask
    tokenizer: Any
    scratch: Path  # deleted after the run
    train: Any  # datasets.Dataset of tokenized features with `labels`
    eval: Any
    unlabeled: Any = None  # tokenized features without `labels`

    @property
    def learning_rate(self) -> float:
        return self.config.learning_rate or METHODS[self.config.method].learning_rate


def _suite_method(name: str, job: Job) -> Trained:
    """Train with the suite's own method ``name`` (`hybridft.methods`), the wiring the benchmark measures."""
    method = get_method(name)
    settings = method.make_config(learning_rate=job.learning_rate)
    ctx = TrainContext(
        run=job.config,
        task=job.task,
        tokenizer=job.tokenizer,
        train_features=job.train,
        data_key={},
        work_dir=job.scratch,
        cache_dir=job.scratch / "cache",
        progress=job.config.progress,
    )
    trained = method.train(ctx, settings)
    trained.extra["settings"] = settings.to_dict()
    return trained


def _merged(name: str, job: Job) -> Trained:
    """LoRA, merged into the weights afterwards: the saved folder is a plain transformers model."""
    trained = _suite_method(name, job)
    return dataclasses.replace(trained, model=trained.model.merge_and_unload())


# The fields HybridTrainingArguments adds to TrainingArguments (α, β, γ, T, the teachers' recipe, ...): recorded.
_HYBRID_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(HybridTrainingArguments)
    if f.name not in {g.name for g in dataclasses.fields(TrainingArguments)} and f.name not in REMOVED_LP_FIELDS
)


def _hybrid(name: str, job: Job) -> Trained:
    """`HybridTrainer` from the pretrained model: it builds both teachers, mixes them and distils into the mix."""
    config = job.config
    args = _student_arguments(job)
    trainer = HybridTrainer(
        model=build_model(config.model, job.task, config.seed),
        args=args,
        train_dataset=job.train,
        eval_dataset=job.eval,
        unlabeled_dataset=job.unlabeled,
        processing_class=job.tokenizer,
        batching="bucketed",
    )
    student = train_measured(trainer, progress=config.progress, stage="student")
    trainable, total = count_parameters(trainer.model)
    settings = {name: getattr(args, name) for name in (*_HYBRID_FIELDS, "learning_rate", "weight_decay")}
    settings["warmup_ratio"] = warmup_ratio(args)
    teachers = {"provenance": trainer.teacher_provenance, "stages": [fit.stage for fit in trainer.teacher_fits]}
    return Trained(
        trainer.model,
        [*trainer.teacher_fits, student],
        trainable,
        total,
        extra={"settings": settings, "teachers": teachers, "teacher_scores": trainer.teacher_scores},
    )


def _student_arguments(job: Job) -> HybridTrainingArguments:
    """The hybrid student's arguments: full fine-tuning's recipe, as every suite stage gets them
    (`hybridft.fitting.training_arguments`), plus the hybrid flags."""
    config = job.config
    spec = TrainSpec(learning_rate=job.learning_rate, epochs=config.epochs, batch_size=config.batch_size,
                     seed=config.seed, weight_decay=FULL_FT_WEIGHT_DECAY, warmup_ratio=FULL_FT_WARMUP)  # fmt: skip
    return training_arguments(spec, job.scratch / "hybrid", progress=config.progress, eval_batch_size=EVAL_BATCH_SIZE,
                              args_class=HybridTrainingArguments, task_type=job.task.kind,
                              **config.hybrid_arguments())  # fmt: skip


def _save_model(trained: Trained, job: Job, folder: Path) -> list[str]:
    trained.model.save_pretrained(folder / "model")
    job.tokenizer.save_pretrained(folder / "model")
    return ["model"]


def _save_adapter(trained: Trained, job: Job, folder: Path) -> list[str]:
    """The adapter with its head, and the frozen model it plugs into (rebuilt from the same seed: identical)."""
    trained.model.save_adapter(str(folder / "adapter"), job.task.name, with_head=True)
    base = build_model(job.config.model, job.task, job.config.seed)
    base.save_pretrained(folder / "base")
    job.tokenizer.save_pretrained(folder / "base")
    return ["adapter", "base"]


@dataclass(frozen=True)
class CommandMethod:
    """How ``hybridft train`` trains one ``--method`` and saves the result."""

    train: Callable[[Job], Trained]
    learning_rate: float  # when --learning-rate is not given
    save: Callable[[Trained, Job, Path], list[str]] = _save_model
    fixed: dict[str, float] = field(default_factory=dict)  # hybrid fields the method pins (kd_pre: gamma 0)
    about: str = ""


# How the command trains and saves each kind of method (`Method.command`); the methods it offers, their one-line
# help, default learning rate and pinned arguments come from the registry (`hybridft.methods`).
_TRAIN = {"model": _suite_method, "adapter": _suite_method, "merged": _merged, "hybrid": _hybrid}
_SAVE = {"model": _save_model, "adapter": _save_adapter, "merged": _save_model, "hybrid": _save_model}


def _command_methods() -> dict[str, CommandMethod]:
    offered = {}
    for name in method_names():
        method = get_method(name)
        if method.command is not None:
            offered[name] = CommandMethod(partial(_TRAIN[method.command], name), method.config_class.learning_rate,
                                          _SAVE[method.command], dict(method.command_fixed), method.about)  # fmt: skip
    return offered


METHODS: dict[str, CommandMethod] = _command_methods()
REFUSED_METHODS = {name: get_method(name).command_refusal for name in method_names()
                   if get_method(name).command_refusal}  # fmt: skip
HYBRID_METHODS = tuple(name for name in METHODS if get_method(name).command == "hybrid")


def check_number(flag: str, value: Any, check: tuple[Callable[[float], bool], str], *, integer: bool = False) -> None:
    """InputError naming ``flag`` unless ``value`` is a finite number (an int if ``integer``) that passes ``check``."""
    number = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value) or not check[0](value):
        raise InputError(flag, f"expected {check[1]}, got {value!r}")


def check_output(flag: str, output: Path) -> None:
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        raise InputError(flag, f"{str(output)!r} exists and is not an empty folder; name a new one")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``hybridft train`` needs (the flags of the same names); checks itself on construction, raising
    `InputError` naming the flag."""

    model: str
    train: str
    eval: str
    output: Path
    text_column: str
    text_pair_column: str | None = None
    label_column: str = "label"
    task_type: str | None = None  # None: inferred from the training labels
    unlabeled: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    unlabeled_split: str = "train"
    method: str = "plain"
    epochs: float = 3.0
    learning_rate: float | None = None  # None: the method's own default
    batch_size: int = 16
    max_length: int = 128
    seed: int = 0
    hybrid: dict[str, Any] = field(default_factory=dict)  # HYBRID_FLAGS fields for the hybrid methods
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        if self.method in REFUSED_METHODS:
            raise InputError(
                "--method", f"{self.method!r} is not offered by this command: {REFUSED_METHODS[self.method]}"
            )
        if self.method not in METHODS:
            raise InputError("--method", f"unknown method {self.method!r}; expected one of {', '.join(METHODS)}")
        if self.method == "adapter" and (reason := adapters_missing()) is not None:
            raise InputError("--method", reason)
        if self.task_type not in (None, *TASK_TYPES):
            raise InputError("--task-type", f"expected one of {', '.join(TASK_TYPES)}, got {self.task_type!r}")
        Columns(self.text_column, self.text_pair_column, self.label_column)  # checks the pair and the label column
        check_number("--epochs", self.epochs, _POSITIVE)
        if self.learning_rate is not None:
            check_number("--learning-rate", self.learning_rate, _POSITIVE)
        check_number("--batch-size", self.batch_size, (lambda v: v >= 1, "an integer >= 1"), integer=True)
        check_number("--max-length", self.max_length, (lambda v: v >= 8, "an integer >= 8"), integer=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError("--seed", f"expected an integer, got {self.seed!r}")
        self._check_hybrid()
        check_output("--output", self.output)

    def _check_hybrid(self) -> None:
        if self.method not in HYBRID_METHODS:
            given = [f"--{name.replace('_', '-')}" for name in self.hybrid] + (
                ["--unlabeled"] if self.unlabeled else []
            )
            if given:
                raise InputError(
                    given[0],
                    f"applies to the hybrid methods ({', '.join(HYBRID_METHODS)}), not to --method {self.method}",
                )
        for name, value in self.hybrid.items():
            flag = f"--{name.replace('_', '-')}"
            if name not in HYBRID_FLAGS:
                raise InputError(flag, f"not a setting of this command; the hybrid ones: {', '.join(HYBRID_FLAGS)}")
            if HYBRID_FLAGS[name] is not None:
                check_number(flag, value, HYBRID_FLAGS[name])
            pinned = METHODS[self.method].fixed.get(name)
            if pinned is not None and value != pinned:
                raise InputError(
                    flag, f"--method {self.method} fixes {name} at {pinned} ({METHODS[self.method].about}), got {value}"
                )

    @property
    def columns(self) -> Columns:
        return Columns(self.text_column, self.text_pair_column, self.label_column)

    def hybrid_arguments(self) -> dict[str, Any]:
        """The HybridTrainingArguments fields set by the flags and by the method (kd_pre / kd_fine pin one)."""
        return {**self.hybrid, **METHODS[self.method].fixed}

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "output": str(self.output)}


def _read(config: TrainConfig):
    """The three tables, checked: columns, labels (their schema from the training table)."""
    columns = config.columns
    train, train_info = load_table(config.train, "--train", split=config.train_split)
    columns.check(train, train_info, labelled=True)
    eval_, eval_info = load_table(config.eval, "--eval", split=config.eval_split)
    columns.check(eval_, eval_info, labelled=True)
    labels = infer_labels(train, columns.label, train_info, config.task_type)
    check_labels(eval_, columns.label, eval_info, labels)
    tables = {"train": (train, train_info), "eval": (eval_, eval_info)}
    if config.unlabeled is not None:
        unlabeled, info = load_table(config.unlabeled, "--unlabeled", split=config.unlabeled_split)
        columns.check(unlabeled, info, labelled=False)
        tables["unlabeled"] = (unlabeled, info)
    return tables, labels


def _load_tokenizer(model: str):
    try:
        return load_tokenizer(model)
    except (OSError, ValueError) as exc:
        raise InputError("--model", f"cannot load the tokenizer of {model!r}: {error_reason(exc)}") from None


def train(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.method`` on the user's data, evaluate, and write the output folder. Returns the metrics."""
    with quiet_datasets(config.progress):
        tables, labels = _read(config)
        tokenizer = _load_tokenizer(config.model)
        features = {
            name: tokenize(table, tokenizer, config.columns, None if name == "unlabeled" else labels, config.max_length)
            for name, (table, _) in tables.items()
        }
    method = METHODS[config.method]
    with tempfile.TemporaryDirectory(prefix="hybridft-train-") as scratch:
        job = Job(config, UserTask(labels), tokenizer, Path(scratch), **features)
        trained = method.train(job)
        metrics, predictions = evaluate(trained, job)
        with staged_output(config.output) as folder:
            saved = method.save(trained, job, folder)
            record = _record(job, trained, metrics, {name: info for name, (_, info) in tables.items()}, saved)
            _write_lines(folder / "predictions.jsonl", predictions)
            write_json(folder / "metrics.json", metrics)
            write_json(folder / "record.json", record)
            (folder / "README.md").write_text(model_card(record, saved))
    return metrics


def evaluate(trained: Trained, job: Job) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics on the evaluation features, and one row per feature: its label, prediction and logits."""
    start = time.perf_counter()
    logits = predict(
        trained.model,
        job.eval,
        job.task.collator(job.tokenizer),
        batch_size=EVAL_BATCH_SIZE,
        output_dir=job.scratch / "predict",
        progress=job.config.progress,
    )
    logits = np.asarray(logits, dtype=np.float32)
    targets = np.asarray(job.eval["labels"])
    labels = job.task.labels
    metrics = {
        **score(logits.astype(np.float64), targets, labels),
        "eval_examples": len(job.eval),
        "eval_time_s": time.perf_counter() - start,
        "train_examples": len(job.train),
        "train_time_s": trained.train_time_s,
    }
    name = (lambda v: float(v)) if labels.task_type == "regression" else (lambda v: labels.names[int(v)])
    predicted = logits[:, 0] if labels.task_type == "regression" else logits.argmax(axis=-1)
    rows = [
        {"row": i, "label": name(t), "prediction": name(p), "logits": [float(v) for v in z]}
        for i, (z, t, p) in enumerate(zip(logits, targets, predicted, strict=True))
    ]
    return metrics, rows


def _record(job: Job, trained: Trained, metrics: dict, sources: dict, saved: list[str]) -> dict[str, Any]:
    """record.json: the arguments, the method's settings, the data, every stage's cost, compute and provenance."""
    config = job.config
    return {
        "command": "hybridft train",
        "config": config.to_dict(),
        "method": {
            "name": config.method,
            "about": METHODS[config.method].about,
            "learning_rate": job.learning_rate,
            "settings": trained.extra["settings"],
        },
        "model": {
            "spec": config.model,
            "path": model_path(config.model),
            "trainable_params": trained.trainable_params,
            "total_params": trained.total_params,
        },
        "labels": {**job.task.labels.to_dict(), "column": config.label_column},
        "data": {name: info.to_dict() for name, info in sources.items()},
        "metrics": metrics,
        "stages": [fit.to_dict() for fit in trained.fits],
        "compute": compute(trained.fits),
        "teachers": trained.extra.get("teachers"),
        "teacher_scores": trained.extra.get("teacher_scores"),
        "outputs": [*saved, "metrics.json", "predictions.jsonl", "record.json", "README.md"],
        "provenance": provenance.collect(),
    }


def compute(fits: list[FitResult]) -> dict[str, float]:
    """Training compute over every stage (`hybridft.compute`: non-padding tokens, estimated FLOPs)."""
    return {
        "train_tokens": sum(f.tokens for f in fits),
        "forward_tokens": sum(f.forward_tokens for f in fits),
        "optimizer_steps": sum(f.optimizer_steps for f in fits),
        "train_flops": sum(f.flops for f in fits),
    }


def score(logits: np.ndarray, targets: np.ndarray, labels: Labels) -> dict[str, float | None]:
    """Eval loss (the models' own: cross-entropy, or MSE for regression) and accuracy and macro-F1 (sklearn), or
    Pearson and Spearman (scipy; None where a side is constant and a correlation is undefined)."""
    if labels.task_type == "regression":
        scores = logits.reshape(-1)
        defined = np.ptp(scores) > 0 and np.ptp(targets) > 0
        return {
            "eval_loss": float(np.mean((scores - targets) ** 2)),
            "pearson": float(pearsonr(scores, targets)[0]) if defined else None,
            "spearman": float(spearmanr(scores, targets)[0]) if defined else None,
        }

    predicted = logits.argmax(axis=-1)
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets).long())
    return {
        "eval_loss": float(loss),
        "accuracy": float(accuracy_score(targets, predicted)),
        "macro_f1": float(f1_score(targets, predicted, average="macro", zero_division=0)),
    }


# ------------------------------------------------------------------------------------------------------ output
@contextlib.contextmanager
def staged_output(target: Path):
    """A new folder beside ``target`` that is renamed to ``target`` when the block completes, and deleted if it
    does not. ``target`` must be absent or an empty folder (`check_output`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.replace(staging, target)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n")


def _write_lines(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


CARD = """# {name}: `{model}` fine-tuned with `{method}`

Written by `hybridft train` (hybridft {version}, git {git}) on {timestamp}. Every argument, the cost of each training
stage and the provenance are in `record.json`; each evaluation row's label, prediction and logits in
`predictions.jsonl`.

- Method: `{method}`, {about}; learning rate {learning_rate}, {epochs} epochs, batch size {batch_size}, max length
  {max_length}, seed {seed}.
- Task: {task}.
{data}

## Evaluation on `{eval_source}` ({eval_rows} rows)

| metric | value |
|---|---:|
{metrics}

## How to load it

```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer
{load}
inputs = tokenizer(["a text"]{pair}, truncation=True, max_length={max_length}, return_tensors="pt")
logits = model(**inputs).logits
{readout}
```
"""
LOAD_MODEL = """
model = AutoModelForSequenceClassification.from_pretrained("model")  # this folder's model/
tokenizer = AutoTokenizer.from_pretrained("model")"""
LOAD_ADAPTER = """import adapters  # pip install adapters

model = AutoModelForSequenceClassification.from_pretrained("base")  # the frozen model it was trained on
adapters.init(model)
model.load_adapter("adapter", set_active=True)  # the trained adapter and task head
tokenizer = AutoTokenizer.from_pretrained("base")"""


def model_card(record: dict[str, Any], saved: list[str]) -> str:
    """The output folder's README.md: what was trained on what, its scores, and how to load it."""
    config, labels, metrics, prov = record["config"], record["labels"], record["metrics"], record["provenance"]
    task = f"{labels['task_type']} of column `{config['text_column']}`"
    if config["text_pair_column"]:
        task += f" paired with `{config['text_pair_column']}`"
    task += f", labels {', '.join(labels['names'])}" if labels["names"] else ", a score"
    data = [
        f"- Data, {name}: `{info['source']}`, {info['rows']} rows, "
        + (f"sha256 {info['sha256'][:16]}…" if info["sha256"] else f"split {info['split']}")
        for name, info in record["data"].items()
    ]
    shown = [n for n in ("accuracy", "macro_f1", "pearson", "spearman", "eval_loss") if n in metrics]
    return CARD.format(
        name=Path(config["output"]).name,
        version=prov["versions"].get("hybridft"),
        git=(prov.get("git_revision") or "unknown")[:12],
        timestamp=prov["timestamp"],
        about=record["method"]["about"],
        learning_rate=record["method"]["learning_rate"],
        task=f"{task} (column `{labels['column']}`)",
        data="\n".join(data),
        eval_source=record["data"]["eval"]["source"],
        eval_rows=metrics["eval_examples"],
        metrics="\n".join(
            f"| {n} | " + ("undefined" if metrics[n] is None else f"{metrics[n]:.4f}") + " |" for n in shown
        ),
        load=LOAD_ADAPTER if "adapter" in saved else LOAD_MODEL,
        pair=', ["second text"]' if config["text_pair_column"] else "",
        readout="label = model.config.id2label[int(logits.argmax(-1))]"
        if labels["names"]
        else "score = float(logits[0, 0])",
        **{k: config[k] for k in ("model", "method", "epochs", "batch_size", "max_length", "seed")},
    )
