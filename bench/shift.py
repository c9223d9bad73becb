"""Evaluation-only shift sets: out-of-distribution test files scored next to a task's own evaluation split.

A shift set is data, not code: a name, the task it evaluates, and the path of a parquet file in that task's schema.
The registered sets (`SHIFT_SETS`) live under a data folder (``<dir>/ood/<name>/test.parquet``, see
``shared/data/ood/README.md``); any other file joins a run as the spec ``"NAME=PATH"`` (the bench's
``--shift TASK:NAME=PATH``). A file is checked against the columns its task reads (`check_schema`): a missing
column, or class names other than the task's, is an error naming the file; extra columns are fine.

Where the files are read from: an explicit ``shift_dir``, else ``$HYBRIDFT_SHIFT_DIR``, else the run's data folder
(``--data-dir`` / ``$HYBRIDFT_DATA_DIR``). A run whose task data come from the hub and that has no such folder, or
whose folder lacks a registered file, skips those sets, says so in one printed line, and records them in
``shift_skipped``.

Scoring (`ShiftSet.headline`, `ShiftSet.entity_types`): the task's own metric on every set; for ``wnut17`` (no
MISC) the headline is entity F1 over PER/LOC/ORG (``plo_f1``: predicted MISC spans dropped), with full F1 beside
it; ``sick_stsb`` reports correlations only (the STS-B metric's Pearson and Spearman); ``conllpp`` is the corrected
CoNLL-2003 test set, a label-noise check (role ``label_noise``) reported apart from the shifts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import load_dataset

from bench.data import resolve_data_dir
from bench.tasks import get_task

SHIFT_DIR_ENV = "HYBRIDFT_SHIFT_DIR"
ROLES = ("shift", "label_noise")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ShiftSet:
    """One evaluation-only set of ``task``. ``path``: relative to the shift folder, or absolute.

    ``headline``: the metric key its tables use (None: the task's headline). ``entity_types``: for token tasks, the
    entity types scored by the ``plo_*`` metrics (predicted spans of other types dropped)."""

    name: str
    task: str
    path: str
    role: str = "shift"
    headline: str | None = None
    entity_types: tuple[str, ...] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"shift set name must be letters, digits, '_', '.', '-' (not first), got {self.name!r}")
        if self.role not in ROLES:
            raise ValueError(f"shift set {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"shift set {self.name!r}: path must be a non-empty string, got {self.path!r}")

    def headline_for(self, task) -> str:
        return self.headline or task.headline

    def file(self, root: Path | None) -> Path | None:
        """The parquet file: ``path`` itself when absolute, else under ``root`` (None without a root)."""
        path = Path(self.path).expanduser()
        if path.is_absolute():
            return path
        return None if root is None else root / path


def _ood(name: str, task: str, **extra: Any) -> ShiftSet:
    return ShiftSet(name=name, task=task, path=f"ood/{name}/test.parquet", **extra)


SHIFT_SETS: tuple[ShiftSet, ...] = (
    _ood("uci_amazon", "sst2", note="Amazon cell-phone reviews (UCI sentiment sentences)"),
    _ood("uci_imdb", "sst2", note="IMDB movie reviews (UCI)"),
    _ood("uci_yelp", "sst2", note="Yelp restaurant reviews (UCI)"),
    _ood("mpqa", "sst2", note="MPQA opinion phrases: a weak shift, 937 also occur as SST-2 phrases"),
    _ood("sick_stsb", "stsb", note="SICK relatedness rescaled to 0-5: correlations only"),
    _ood("sick_rte", "rte", note="SICK entailment A→B (29 % entailment)"),
    _ood("paws_wiki", "mrpc", note="PAWS-Wiki: adversarial high-overlap pairs"),
    _ood(
        "wnut17",
        "conll2003",
        headline="plo_f1",
        entity_types=("PER", "LOC", "ORG"),
        note="WNUT-17 social media; no MISC, so the headline is F1 over PER/LOC/ORG",
    ),
    _ood("conllpp", "conll2003", role="label_noise", note="CoNLL++: the CoNLL-2003 test set with labels corrected"),
)
_REGISTRY = {s.name: s for s in SHIFT_SETS}


def registered(task: str) -> tuple[ShiftSet, ...]:
    """The registered shift sets of ``task``, in registry order."""
    return tuple(s for s in SHIFT_SETS if s.task == task)


def parse_spec(spec: str, task: str) -> ShiftSet:
    """A RunConfig ``shifts`` entry: a registered name of ``task``'s sets, or ``"NAME=PATH"`` (any file)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a shift set spec must be a non-empty string, got {spec!r}")
    if "=" in spec:
        name, _, path = spec.partition("=")
        if name in _REGISTRY:
            raise ValueError(f"shift set {spec!r}: {name!r} is a registered set's name; give your file another name")
        return ShiftSet(name=name, task=task, path=path)
    known = registered(task)
    found = _REGISTRY.get(spec)
    if found is None or found.task != task:
        names = ", ".join(s.name for s in known) or "none"
        raise ValueError(
            f"unknown shift set {spec!r} for task {task!r}; registered for it: {names}; or give a file as NAME=PATH"
        )
    return found


def parse_cli_shift(text: str) -> tuple[str, str]:
    """``--shift TASK:NAME=PATH`` → (task, "NAME=PATH"); ValueError naming the expected form."""
    task, sep, rest = text.partition(":")
    if not sep or not task or "=" not in rest or not rest.partition("=")[0] or not rest.partition("=")[2]:
        raise ValueError(f"--shift must look like TASK:NAME=PATH, e.g. sst2:myset=/data/test.parquet; got {text!r}")

    get_task(task)
    name, _, path = rest.partition("=")
    parse_spec(f"{name}={path}", task)
    return task, f"{name}={Path(path).expanduser().resolve()}"


def default_specs(task: str) -> tuple[str, ...]:
    """Every registered set of ``task`` (what a run evaluates unless told otherwise)."""
    return tuple(s.name for s in registered(task))


def shift_root(data_dir: str | os.PathLike | None = None, shift_dir: str | os.PathLike | None = None) -> Path | None:
    """Where relative shift paths are read from: ``shift_dir``, ``$HYBRIDFT_SHIFT_DIR``, the data folder, or None."""
    for candidate in (shift_dir, os.environ.get(SHIFT_DIR_ENV)):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_dir():
                raise FileNotFoundError(
                    f"shift folder {str(path)!r} is not a directory (shift_dir or ${SHIFT_DIR_ENV})"
                )
            return path
    return resolve_data_dir(data_dir)


def task_columns(task) -> dict[str, str]:
    """Column → what it must hold, for the columns ``task`` reads from a file."""
    if task.kind in ("classification", "regression"):
        first, second = task.text_keys
        columns = {first: "text", **({second: "text"} if second else {})}
        columns["label"] = "float score" if task.kind == "regression" else "class label"
        return columns
    if task.kind == "token":
        return {"tokens": "list of words", task.tags_column: "list of tags"}
    raise ValueError(f"task {task.name!r} ({task.kind}) has no shift-set support; expected a GLUE or token task")


def _class_names(feature) -> list[str] | None:
    names = getattr(feature, "names", None)
    if names is None and hasattr(feature, "feature"):  # Sequence(ClassLabel) / List(ClassLabel)
        names = getattr(feature.feature, "names", None)
    return list(names) if names is not None else None


def check_schema(dataset, task, source: str) -> None:
    """ValueError naming ``source`` when a column ``task`` reads is missing, or its class names differ."""
    found = list(dataset.column_names)
    for column, what in task_columns(task).items():
        if column not in found:
            raise ValueError(
                f"shift set {source}: column {column!r} ({what}) expected by task {task.name!r} is missing; "
                f"columns found: {found}"
            )
    label_column = "label" if task.kind != "token" else task.tags_column
    names = _class_names(dataset.features[label_column])
    if task.kind == "regression":
        if names is not None:
            raise ValueError(f"shift set {source}: column 'label' holds class labels {names}; task {task.name!r} "
                             f"expects a float score")  # fmt: skip
        return
    if names is not None and tuple(names) != tuple(task.label_names):
        raise ValueError(
            f"shift set {source}: column {label_column!r} has label names {names}; task {task.name!r} expects "
            f"{list(task.label_names)} (in this order)"
        )
    if names is None:  # plain integers: they must index the task's labels
        values = dataset[label_column]
        flat = [v for row in values for v in row] if task.kind == "token" else values
        bad = sorted({v for v in flat if not isinstance(v, int) or not 0 <= v < task.num_labels})[:5]
        if bad:
            raise ValueError(f"shift set {source}: column {label_column!r} holds {bad}, not label ids 0.."
                             f"{task.num_labels - 1} of {list(task.label_names)}")  # fmt: skip


def load(shift: ShiftSet, task, root: Path | None):
    """The set's rows as a Dataset (schema checked), or None when its file is not there (relative path only)."""
    path = shift.file(root)
    if path is None or not path.is_file():
        if Path(shift.path).expanduser().is_absolute():
            raise FileNotFoundError(f"shift set {shift.name!r} of task {shift.task!r}: {path} does not exist")
        return None
    dataset = load_dataset("parquet", data_files={"test": str(path)}, split="test")
    check_schema(dataset, task, f"{shift.name!r} ({path})")
    return dataset


def restrict_entities(tags: list[list[str]], types: tuple[str, ...]) -> list[list[str]]:
    """IOB2 tags with every entity of another type turned into O (an entity's span is unchanged otherwise)."""
    keep = set(types)
    return [[t if t == "O" or t.split("-", 1)[-1] in keep else "O" for t in row] for row in tags]


def entity_prefix(types: tuple[str, ...]) -> str:
    """The metric prefix of an entity-type restriction: the types' initials, ("PER", "LOC", "ORG") → "plo"."""
    return "".join(t[0] for t in types).lower()


def entity_metrics(task, predicted: list[list[str]], gold: list[list[str]], types: tuple[str, ...]) -> dict:
    """``<prefix>_precision`` / ``_recall`` / ``_f1`` (prefix `entity_prefix`): seqeval entity scores over ``types``."""
    scores = task.metric().compute(predictions=restrict_entities(predicted, types),
                                   references=restrict_entities(gold, types), zero_division=0)  # fmt: skip
    prefix = entity_prefix(types)
    return {f"{prefix}_{k}": float(scores[f"overall_{k}"]) for k in ("precision", "recall", "f1")}


__all__ = [
    "SHIFT_DIR_ENV",
    "SHIFT_SETS",
    "ShiftSet",
    "check_schema",
    "default_specs",
    "entity_metrics",
    "entity_prefix",
    "load",
    "parse_cli_shift",
    "parse_spec",
    "registered",
    "restrict_entities",
    "shift_root",
    "task_columns",
]
