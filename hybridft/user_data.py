"""The user's own data for ``hybridft train``: reading a file (or a hub dataset), checking it, and tokenizing it.

Every problem with the input is an `InputError` that names the command-line argument, the value at fault and what
was expected, so the command can print it as one line and exit with code 2 before any model is loaded. The checks
happen here, up front, because a bad label met by the Trainer an hour into training is a traceback, not a message.

Labels. A classification label may be an integer, a string, a boolean or an integral float (1.0); the classes are
the distinct training labels in sorted order, their ids the positions in that order, and their names (``str`` of the
value) go into the model config as ``id2label``. A hub dataset's ``ClassLabel`` column keeps its own names and ids.
A regression label is any number. Without ``--task-type`` the column decides: floats that are not all integral are
regression, everything else classification.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
from datasets import ClassLabel, load_dataset

if TYPE_CHECKING:
    from datasets import Dataset

TASK_TYPES = ("classification", "regression")
# File extension → the `datasets` builder that reads it (JSON: one array of objects, or JSON Lines).
FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_TEXT_TYPES = ("string", "large_string")


class InputError(ValueError):
    """Bad user input: ``argument`` is the command-line flag it came from; ``str()`` reads like argparse's errors."""

    def __init__(self, argument: str, message: str):
        super().__init__(f"argument {argument}: {message}")
        self.argument = argument


@dataclass(frozen=True)
class DataSource:
    """Where one table came from, for the run's record: the file and its sha256, or the hub id and split."""

    argument: str  # the flag that named it, e.g. "--train"
    source: str
    format: str  # "csv", "json", "parquet" or "hub"
    rows: int
    sha256: str | None = None  # of the file; None for a hub dataset
    split: str | None = None  # the hub split; None for a file

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "argument"}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def quiet_datasets(progress: bool):
    """While reading: no `datasets` progress bars unless ``progress``, and no `datasets` error logs (a file that
    cannot be read becomes one `InputError` line, not a log record followed by it)."""
    bars_were_on = not datasets.are_progress_bars_disabled()
    if not progress:
        datasets.disable_progress_bars()
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars_were_on:
            datasets.enable_progress_bars()


def error_reason(exc: BaseException) -> str:
    """The first line of the innermost error (`datasets` wraps the parser's error in DatasetGenerationError)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_table(source: str, argument: str, *, split: str = "train") -> tuple[Dataset, DataSource]:
    """A CSV, JSON, JSON Lines or Parquet file by its extension, else a hub dataset ``name[:config]`` (its
    ``split``). InputError for a folder, a file with another extension, an empty or unreadable file, no rows."""
    path = Path(source).expanduser()
    if path.is_dir():
        raise InputError(argument, f"{source!r} is a folder; expected a CSV, JSON, JSONL or Parquet file")
    if path.is_file():
        dataset, info = _read_file(path, source, argument)
    elif path.suffix.lower() in FORMATS:
        raise InputError(argument, f"no such file: {source!r}")
    else:
        dataset, info = _read_hub(source, argument, split)
    if len(dataset) == 0:
        raise InputError(argument, f"{source!r} has no rows")
    return dataset, info


def _read_file(path: Path, source: str, argument: str) -> tuple[Dataset, DataSource]:
    builder = FORMATS.get(path.suffix.lower())
    if builder is None:
        raise InputError(
            argument,
            f"{source!r} has the extension {path.suffix or '(none)'!r}; expected a file ending in {', '.join(FORMATS)}",
        )
    with open(path, "rb") as handle:
        if not handle.read(4096).strip():
            raise InputError(argument, f"{source!r} is empty")
    split = argument.lstrip("-")  # the name datasets shows while reading: "train", "eval", "unlabeled"
    try:
        dataset = load_dataset(builder, data_files={split: str(path)}, split=split)
    except Exception as exc:  # datasets raises many types here (DatasetGenerationError, ArrowInvalid, ...)
        if isinstance(exc, ValueError) and "corresponds to no data" in str(exc):  # a CSV header and no rows
            raise InputError(argument, f"{source!r} has no rows") from None
        raise InputError(argument, f"cannot read {source!r} as {builder}: {error_reason(exc)}") from None
    return dataset, DataSource(argument, str(path), builder, len(dataset), sha256=file_sha256(path))


def _read_hub(source: str, argument: str, split: str) -> tuple[Dataset, DataSource]:
    name, _, config = source.partition(":")
    try:
        dataset = load_dataset(name, config or None, split=split)
    except Exception as exc:  # offline, unknown id, unknown split: all the user's to fix
        raise InputError(
            argument,
            f"{source!r} is not a file, and as a hub dataset (split {split!r}) it does not load: {error_reason(exc)}",
        ) from None
    return dataset, DataSource(argument, source, "hub", len(dataset), split=split)


@dataclass(frozen=True)
class Columns:
    """Which columns hold the text (and the second text of a pair) and the label."""

    text: str
    text_pair: str | None = None
    label: str = "label"

    def __post_init__(self) -> None:
        if self.text_pair is not None and self.text_pair == self.text:
            raise InputError(
                "--text-pair-column",
                f"{self.text_pair!r} is also the --text-column; a pair needs "
                "two different columns (leave it out for single texts)",
            )
        if self.label in (self.text, self.text_pair):
            raise InputError("--label-column", f"{self.label!r} is also a text column; it must be its own column")

    def check(self, dataset: Dataset, source: DataSource, *, labelled: bool) -> None:
        """InputError for a missing column (naming the ones the table has), a text column that is not text or has
        missing values, or a missing label."""
        flags = {"--text-column": self.text, "--text-pair-column": self.text_pair}
        if labelled:
            flags["--label-column"] = self.label
        for flag, column in flags.items():
            if column is not None and column not in dataset.column_names:
                raise InputError(
                    flag,
                    f"no column {column!r} in {source.argument} {source.source!r}; its columns: "
                    f"{', '.join(dataset.column_names)}",
                )
        for flag in ("--text-column", "--text-pair-column"):
            column = flags[flag]
            if column is None:
                continue
            dtype = getattr(dataset.features[column], "dtype", type(dataset.features[column]).__name__)
            if dtype not in _TEXT_TYPES:
                raise InputError(
                    flag,
                    f"column {column!r} of {source.argument} {source.source!r} holds {dtype} values; expected text",
                )
            _no_missing(dataset[column], flag, column, source)
        if labelled:
            _no_missing(dataset[self.label], "--label-column", self.label, source)


def _missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _no_missing(values: list, flag: str, column: str, source: DataSource) -> None:
    for row, value in enumerate(values, start=1):
        if _missing(value):
            raise InputError(
                flag,
                f"column {column!r} is empty (value {value!r}) in row {row} of {source.argument} "
                f"{source.source!r}; every row needs one",
            )


@dataclass(frozen=True)
class Labels:
    """What the label column means: regression, or classification over ``values`` (raw label values, id = position)
    named ``names``."""

    task_type: str
    values: tuple = ()
    names: tuple[str, ...] = ()

    def encode(self, value: Any) -> int | float:
        """The model's target for one raw label: its class id, or the float score."""
        if self.task_type == "regression":
            return float(value)
        return self._ids[_class_key(value)]

    @cached_property
    def _ids(self) -> dict:
        return {value: i for i, value in enumerate(self.values)}

    def model_kwargs(self) -> dict[str, Any]:
        """``from_pretrained`` / ``from_config`` keyword arguments: the head size and the label names."""
        if self.task_type == "regression":
            return {"num_labels": 1, "problem_type": "regression"}
        id2label = dict(enumerate(self.names))
        return {
            "num_labels": len(self.names),
            "id2label": id2label,
            "label2id": {v: k for k, v in id2label.items()},
            "problem_type": "single_label_classification",
        }

    def to_dict(self) -> dict[str, Any]:
        return {"task_type": self.task_type, "names": list(self.names)}


def _class_key(value: Any) -> Any:
    """A label as a class: integral floats become ints (so 1.0 and 1 are one class)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_class_label(value: Any) -> bool:
    return isinstance(value, (bool, int, str)) or (isinstance(value, float) and value.is_integer())


def infer_labels(dataset: Dataset, column: str, source: DataSource, task_type: str | None) -> Labels:
    """The label schema from the training table (module docstring); ``task_type`` None → inferred."""
    feature = dataset.features[column]
    values = dataset[column]
    if task_type is None:
        scores = any(isinstance(v, float) and not v.is_integer() for v in values)
        task_type = "regression" if scores else "classification"
    if task_type == "regression":
        _check_regression(values, column, source)
        return Labels("regression")
    if isinstance(feature, ClassLabel):
        expected = f"a class id 0..{feature.num_classes - 1} of its ClassLabel (-1 marks a row without a label)"
        _check_known(values, range(feature.num_classes), column, source, expected)
        return Labels("classification", tuple(range(feature.num_classes)), tuple(feature.names))
    _check_classes(values, column, source)
    classes = tuple(sorted({_class_key(v) for v in values}))
    return Labels("classification", classes, tuple(str(v) for v in classes))


def _check_regression(values: list, column: str, source: DataSource) -> None:
    for row, value in enumerate(values, start=1):
        if isinstance(value, str) or not math.isfinite(float(value)):
            raise InputError(
                "--label-column",
                f"column {column!r} holds {value!r} in row {row} of {source.argument} "
                f"{source.source!r}; regression expects finite numbers",
            )


def _check_classes(values: list, column: str, source: DataSource) -> None:
    for row, value in enumerate(values, start=1):
        if not _is_class_label(value):
            raise InputError(
                "--label-column",
                f"column {column!r} holds {value!r} in row {row} of {source.argument} "
                f"{source.source!r}, a score, not a class; classification expects integer, string or "
                "boolean labels (use --task-type regression for scores)",
            )


def _check_known(values: list, known, column: str, source: DataSource, expected: str) -> None:
    unknown = sorted({v for v in values if v not in known}, key=repr)
    if unknown:
        shown = ", ".join(repr(v) for v in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise InputError(
            source.argument,
            f"{source.source!r}: column {column!r} holds label(s) {shown}; expected {expected}",
        )


def check_labels(dataset: Dataset, column: str, source: DataSource, labels: Labels) -> None:
    """InputError unless every label of ``dataset`` (an evaluation table) fits ``labels`` (from the training one)."""
    values = dataset[column]
    if labels.task_type == "regression":
        _check_regression(values, column, source)
        return
    _check_classes(values, column, source)
    known = set(labels.values)
    expected = f"one of the training labels: {', '.join(labels.names)}"
    _check_known([_class_key(v) for v in values], known, column, source, expected)


def tokenize(dataset: Dataset, tokenizer, columns: Columns, labels: Labels | None, max_length: int) -> Dataset:
    """Model inputs (truncated to ``max_length``, unpadded) and, when ``labels`` is given, ``labels`` targets."""

    def encode(batch):
        pair = batch[columns.text_pair] if columns.text_pair else None
        features = tokenizer(batch[columns.text], pair, truncation=True, max_length=max_length)
        if labels is not None:
            features["labels"] = [labels.encode(v) for v in batch[columns.label]]
        return features

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing")
