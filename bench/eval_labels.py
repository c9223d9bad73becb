"""Labels of the evaluation subsets of older records: `python -m bench.eval_labels DIR [DIR ...] [--check]`.

A classifier's record now carries ``prediction_share`` (`bench.scoring`): its most-predicted class and that
class's share of the predictions and of the labels, which the tables need to flag runs collapsed onto one class.
Records written before it hold only per-example correctness (``eval_stats`` of kind "mean") and no predictions. For
a binary task the prediction is the label when correct and the other class when not, so the labels of the
evaluation subset are all that is missing. This command writes them, for every scored set (the evaluation split and
each shift set) of a classification or label-word choice task (``sst2_lm``) whose eval_stats are of kind "mean" and
which lacks ``prediction_share``:

- the subset is rebuilt from the record's description (``subsets.eval``, or a shift entry's ``subset``: task, split,
  seed, size) by the loading code a run uses (`bench.experiment.prepare_data`, `prepare_shifts`), and its content
  fingerprint must equal the recorded one (a mismatch is an error naming the record and the set);
- it must have as many rows as every record's eval_stats that use it.

``DIR/eval_labels.json`` maps each distinct fingerprint to ``{"task", "split", "seed", "size", "num_labels",
"labels"}`` (labels in row order): sorted keys, one line, written atomically, so the same records and data give the
same bytes. A folder with nothing to label gets no file. ``--check`` writes nothing and exits 1 when a folder's file
differs from what would be written, is missing, or should not exist. Data: ``--data-dir``, else
``$HYBRIDFT_DATA_DIR``, else the Hugging Face hub, as for a run (`bench.data.resolve_data_dir`); shift sets from
``$HYBRIDFT_SHIFT_DIR``, else the data folder (`bench.shift.shift_root`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import records as rec
from bench import shift
from bench.data import resolve_data_dir, subset
from bench.experiment import split_dev
from bench.tasks import get_task
from hybridft.user_data import quiet_datasets

LABELS_FILE = "eval_labels.json"
EVAL_SET = "eval"


@dataclass(frozen=True)
class ScoredSet:
    """One scored set of one record that needs its labels: the record's task, the set (``eval`` or a shift set's
    name), the recorded subset, how many eval_stats rows it has, and what rebuilding it needs besides the subset."""

    folder: str
    record: str  # "key K (method M, seed S)", for messages
    task: str
    name: str
    subset: dict[str, Any]
    rows: int
    shift_spec: str | None = None  # the run's spec of this shift set (a registered name or NAME=PATH)
    dev: dict[str, Any] | None = None  # the record's dev subset, for a run scored on its dev split

    def where(self) -> str:
        return f"{self.folder}: {self.record}, set {self.name!r}"


def is_classifier(task_name: str) -> bool:
    """A classification task, or a causal-LM task scored by label-word choice (``sst2_lm``)."""
    task = get_task(task_name)
    return task.kind == "classification" or (task.kind == "causal_lm" and getattr(task, "output", None) == "choice")


def _scored_entries(record: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(set name, the entry holding its eval_stats, its subset) of the evaluation split and of each shift set."""
    yield EVAL_SET, record, (record.get("subsets") or {}).get("eval")
    for name, entry in sorted((record.get("shift_metrics") or {}).items()):
        yield name, entry, entry.get("subset")


def _shift_spec(record: dict[str, Any], name: str) -> str:
    for spec in (record.get("config") or {}).get("shifts") or ():
        if spec.partition("=")[0] == name:
            return spec
    return name  # a registered set


def needs_labels(record: dict[str, Any], folder: str = "") -> list[ScoredSet]:
    """The scored sets of ``record`` that need labels (module docstring), in order: the evaluation split, then the
    shift sets by name. A record of a task that is not a classifier needs none."""
    if record.get("status") not in rec.FINISHED or not is_classifier(record["task"]):
        return []
    label = f"key {record['key']} (method {record['method']}, seed {record['seed']})"
    found = []
    for name, entry, subset_info in _scored_entries(record):
        stats = entry.get("eval_stats")
        if not isinstance(stats, dict) or stats.get("kind") != "mean" or "prediction_share" in entry:
            continue
        if not isinstance(subset_info, dict):
            raise ValueError(f"{folder}: {label}, set {name!r}: eval_stats without a recorded subset")
        spec = None if name == EVAL_SET else _shift_spec(record, name)
        dev = (
            (record.get("subsets") or {}).get("dev") if name == EVAL_SET and subset_info.get("split") == "dev" else None
        )
        found.append(ScoredSet(folder=folder, record=label, task=record["task"], name=name, subset=subset_info,
                               rows=len(stats["rows"]), shift_spec=spec, dev=dev))  # fmt: skip
    return found


def rebuild_subset(scored: ScoredSet, data_dir: str | None):
    """(rows, SubsetInfo) of the set as a run draws it: the split (or the shift file, or the dev split held out of
    the train split) subset to the recorded size with the recorded seed (`bench.data.subset`)."""
    task, info = get_task(scored.task), scored.subset
    split = info["split"]
    if scored.shift_spec is not None:
        entry = shift.parse_spec(scored.shift_spec, task.name)
        raw = shift.load(entry, task, shift.shift_root(data_dir))
        if raw is None:
            raise FileNotFoundError(f"{scored.where()}: shift set file {entry.path!r} not found (set --data-dir or "
                                    f"${shift.SHIFT_DIR_ENV})")  # fmt: skip
    elif split == "dev":
        if not isinstance(scored.dev, dict):
            raise ValueError(f"{scored.where()}: scored on the dev split but the record has no subsets.dev")
        pool = task.load(task.train_split, data_dir)
        _, raw, _ = split_dev(pool, scored.dev["size"], scored.dev["seed"], task=task.name, split=task.train_split)
    else:
        raw = task.load(split, data_dir)
    return subset(raw, info["size"], info["seed"], task=task.name, split=split)


def subset_labels(scored: ScoredSet, data_dir: str | None) -> list[int]:
    """The integer labels of the rebuilt set in row order; ValueError when its fingerprint is not the recorded one
    or a label is not a class id."""
    rows, info = rebuild_subset(scored, data_dir)
    if info.fingerprint != scored.subset["fingerprint"]:
        raise ValueError(f"{scored.where()}: the rebuilt subset ({info.split}, seed {info.seed}, {info.size} rows) "
                         f"has fingerprint {info.fingerprint}, the record {scored.subset['fingerprint']}: other data "
                         f"than the run's")  # fmt: skip
    num_labels = get_task(scored.task).num_labels
    labels = [int(y) for y in rows["label"]]
    bad = sorted({y for y in labels if not 0 <= y < num_labels})[:5]
    if bad:
        raise ValueError(f"{scored.where()}: labels {bad} are not class ids 0..{num_labels - 1}")
    return labels


def _source(scored: ScoredSet) -> tuple:
    """What identifies a rebuilt set apart from its fingerprint: sets with the same source load once."""
    dev = None if scored.dev is None else (scored.dev["size"], scored.dev["seed"])
    info = scored.subset
    return scored.task, info["split"], info["seed"], info["size"], scored.shift_spec, dev


def collect_labels(directory: str | Path, data_dir: str | None, *, cache: dict | None = None) -> dict[str, dict]:
    """fingerprint → {task, split, seed, size, num_labels, labels} for every set of the folder's records that needs
    labels (`needs_labels`); ValueError when a set's row count differs from a record's eval_stats. ``cache``: labels
    of sets already rebuilt (by `_source`), shared across folders."""
    cache = {} if cache is None else cache
    entries: dict[str, dict] = {}
    for record in rec.load_records(directory):
        for scored in needs_labels(record, str(directory)):
            source = _source(scored)
            if source not in cache:
                start = time.perf_counter()
                cache[source] = subset_labels(scored, data_dir)
                print(f"{directory}: {scored.task} {scored.subset['split']} (seed {scored.subset['seed']}, "
                      f"{len(cache[source])} rows) in {time.perf_counter() - start:.1f}s", file=sys.stderr)  # fmt: skip
            labels, info = cache[source], scored.subset
            if len(labels) != scored.rows:
                raise ValueError(f"{scored.where()}: {scored.rows} eval_stats rows but its subset has {len(labels)}")
            entry = {"task": scored.task, "split": info["split"], "seed": info["seed"], "size": info["size"],
                     "num_labels": get_task(scored.task).num_labels, "labels": labels}  # fmt: skip
            old = entries.get(info["fingerprint"])
            if old is not None and old["labels"] != labels:
                raise ValueError(f"{scored.where()}: fingerprint {info['fingerprint']} names two label lists")
            if old is None or _describe(entry) < _describe(old):  # one entry per content, whichever record came first
                entries[info["fingerprint"]] = entry
    return entries


def _describe(entry: dict) -> tuple:
    return entry["task"], entry["split"], entry["seed"], entry["size"]


def render(entries: dict[str, dict]) -> str | None:
    """The file's text (sorted keys, one line, a final newline), or None when there is nothing to write."""
    return json.dumps(entries, sort_keys=True) + "\n" if entries else None


def write_labels(directory: str | Path, data_dir: str | None, *, cache: dict | None = None) -> Path | None:
    """Write ``DIR/eval_labels.json`` (atomically); None, and nothing written, when no set needs labels."""
    text = render(collect_labels(directory, data_dir, cache=cache))
    if text is None:
        return None
    path = Path(directory) / LABELS_FILE
    rec.atomic_write_text(path, text)
    return path


def check_labels(directory: str | Path, data_dir: str | None, *, cache: dict | None = None) -> str | None:
    """None when ``DIR/eval_labels.json`` is what `write_labels` would write (or absent with nothing to write), else
    what is wrong."""
    text = render(collect_labels(directory, data_dir, cache=cache))
    path = Path(directory) / LABELS_FILE
    on_disk = path.read_text(encoding="utf-8") if path.is_file() else None
    if on_disk == text:
        return None
    if text is None:
        return f"{path} exists but no record of {directory} needs labels"
    return f"{path} is missing" if on_disk is None else f"{path} differs from what the records and data give"


def _check_folders(folders: list[Path]) -> str | None:
    for folder in folders:
        if not folder.is_dir():
            return f"{folder}: no such folder"
        if not rec.has_records(folder):
            return f"{folder}: no runs*.jsonl or {rec.RECORDS_DIR}/ records"
    return None


def _run(folders: list[Path], data_dir: str | None, *, check: bool) -> int:
    status, cache = 0, {}
    for directory in folders:
        start = time.perf_counter()
        try:
            if check:
                problem = check_labels(directory, data_dir, cache=cache)
                status = max(status, 1 if problem else 0)
                print(problem or f"{directory}: eval labels are up to date", file=sys.stderr)
            elif path := write_labels(directory, data_dir, cache=cache):
                print(path)
            else:
                print(f"{directory}: no record needs labels, no {LABELS_FILE} written", file=sys.stderr)
        except (ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{directory}: {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.eval_labels", description=__doc__.split("\n\n")[0])
    p.add_argument("directory", type=Path, nargs="+", help="results folder(s) holding runs*.jsonl or runs.d/")
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a folder's file differs or is missing"
    )
    p.add_argument("--data-dir", help="local data folder (default $HYBRIDFT_DATA_DIR, else the Hugging Face hub)")
    args = p.parse_args(argv)

    problem = _check_folders(args.directory)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        root = resolve_data_dir(args.data_dir)
    except FileNotFoundError as err:
        print(f"--data-dir: {err}", file=sys.stderr)
        return 2
    data_dir = None if root is None else str(root)
    with quiet_datasets(progress=False):  # one line per subset loaded is the progress shown
        return _run(args.directory, data_dir, check=args.check)


__all__ = [
    "LABELS_FILE",
    "ScoredSet",
    "check_labels",
    "collect_labels",
    "is_classifier",
    "main",
    "needs_labels",
    "rebuild_subset",
    "render",
    "subset_labels",
    "write_labels",
]


if __name__ == "__main__":
    sys.exit(main())
