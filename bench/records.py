"""Run records: one JSON object per run, keyed by the run's config hash.

Each run's record is its own file, ``DIR/runs.d/<key>.json``, written atomically by whichever process ran it
(`write_run_record`): the local runner, a SLURM job, a Ray task. Concurrent workers therefore never write the same
file unless they ran the same run, and then either copy is a whole record of it; no lock is needed, so this holds on
NFS and Lustre too. ``DIR/runs.jsonl`` is derived from them (`compile_runs`: every record, one line each, sorted by
key, so the same records always give the same file), and readers merge every source: ``runs.jsonl``, the
``runs-K-of-N.jsonl`` files of earlier sharded benches, and ``runs.d``. Committed results keep ``runs.jsonl``;
``runs.d`` is git-ignored.

Every write is atomic: the whole new file goes to a temporary file in the same folder, is fsynced, and replaces the
old one with os.replace, so a SIGKILL at any instant leaves either the old or the new file, both valid. The older
single-file writer (`append_record`: a read-modify-write of one runs file under an exclusive flock) is kept for
tools and tests that write a runs.jsonl directly; the bench no longer uses it.

Status: "ok", "diverged" (non-finite training loss; finished, kept) or "failed" (an exception; its type, message
and traceback tail are kept). Finished means ok or diverged; failed runs are retried only on request, and a retried
run's new record replaces its failed line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

FINISHED = ("ok", "diverged")
STATUSES = ("ok", "diverged", "failed")
RUNS_GLOB = "runs*.jsonl"
RECORDS_DIR = "runs.d"


def runs_filename(shard: tuple[int, int] | None = None) -> str:
    """runs.jsonl, or runs-K-of-N.jsonl for shard K of N."""
    return "runs.jsonl" if shard is None else f"runs-{shard[0]}-of-{shard[1]}.jsonl"


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, non-finite floats to None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array, torch tensor
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(record: dict[str, Any]) -> str:
    """One line of canonical JSON (sorted keys, strict: no NaN), without the newline."""
    return json.dumps(_clean(record), sort_keys=True, allow_nan=False, ensure_ascii=False)


def validate(record: Any, where: str = "record") -> dict[str, Any]:
    """Check the fields every reader relies on; ValueError naming the place and the field otherwise."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for name in ("key", "task", "method", "seed", "model", "status"):
        if name not in record:
            raise ValueError(f"{where}: missing field {name!r}")
    if record["status"] not in STATUSES:
        raise ValueError(f"{where}: status {record['status']!r} not in {STATUSES}")
    return record


def read_file(path: str | Path) -> list[dict[str, Any]]:
    """Records of one runs file, in file order. A missing file is empty; a bad line is an error naming it."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        records.append(validate(value, f"{path}:{lineno}"))
    return records


def runs_files(directory: str | Path) -> list[Path]:
    """Every runs*.jsonl in a results folder, sorted by name (temporary files start with a dot and are skipped)."""
    return sorted(Path(directory).glob(RUNS_GLOB))


def record_files(directory: str | Path) -> list[Path]:
    """Every per-run record file, DIR/runs.d/<key>.json, sorted by name (temporary files are skipped)."""
    return sorted((Path(directory) / RECORDS_DIR).glob("[!.]*.json"))


def has_records(directory: str | Path) -> bool:
    return bool(runs_files(directory) or record_files(directory))


def read_record_file(path: Path) -> dict[str, Any]:
    try:
        return validate(json.loads(path.read_text(encoding="utf-8")), str(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from None


def write_run_record(directory: str | Path, record: dict[str, Any]) -> bool:
    """DIR/runs.d/<key>.json, atomically. Returns False (and writes nothing) if that key already has a finished
    record there: a finished run is never replaced, and a failed one is replaced by its retry."""
    path = Path(directory) / RECORDS_DIR / f"{validate(record)['key']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and read_record_file(path)["status"] in FINISHED:
        return False
    atomic_write_text(path, dumps(record) + "\n")
    return True


def compile_runs(directory: str | Path) -> Path | None:
    """Rewrite DIR/runs.jsonl as every record of the folder (merged, one per key), sorted by key; None (nothing
    written) for a folder without per-run files. Safe to run from several processes at once: each writes the merge of
    what it read, atomically, and the per-run files stay the source."""
    directory = Path(directory)
    if not record_files(directory):
        return None
    records = sorted(load_records(directory), key=lambda r: r["key"])
    path = directory / runs_filename()
    atomic_write_text(path, "".join(f"{dumps(r)}\n" for r in records))
    return path


def _preference(record: dict[str, Any]) -> tuple:
    # finished beats failed; then the later run; then the file/line order as a last, deterministic tie-break
    return (record["status"] in FINISHED, record.get("timestamp") or "")


def merge(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per key (finished over failed, then the latest), in first-seen order."""
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        old = best.get(record["key"])
        if old is None or _preference(record) >= _preference(old):
            best[record["key"]] = record
    return list(best.values())


def load_records(directory: str | Path) -> list[dict[str, Any]]:
    """The merged records of a results folder: its runs*.jsonl files, then its per-run files."""
    lines = (r for path in runs_files(directory) for r in read_file(path))
    files = (read_record_file(path) for path in record_files(directory))
    return merge([*lines, *files])


def finished_keys(records: Iterable[dict[str, Any]], *, retry_failed: bool = False) -> set[str]:
    """Keys a bench skips: finished runs, plus failed ones unless they are to be retried."""
    skip = FINISHED if retry_failed else STATUSES
    return {r["key"] for r in records if r["status"] in skip}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive flock on the folder holding `path` (no lock file left behind; released if the process dies)."""
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` so that any crash leaves the old or the new content, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)  # mkstemp makes it 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def append_record(path: str | Path, record: dict[str, Any]) -> bool:
    """Add one record to a runs file atomically. Returns False (and writes nothing) if its key already finished.

    A failed record of the same key is replaced (a retry), so each key has at most one line per file.
    """
    path = Path(path)
    line = dumps(validate(record))
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        kept = []
        for old in read_file(path):
            if old["key"] == record["key"]:
                if old["status"] in FINISHED:
                    return False
                continue  # the failed attempt this record retries
            kept.append(dumps(old))
        atomic_write_text(path, "".join(f"{x}\n" for x in [*kept, line]))
    return True


__all__ = [
    "FINISHED",
    "RECORDS_DIR",
    "STATUSES",
    "append_record",
    "atomic_write_text",
    "compile_runs",
    "dumps",
    "finished_keys",
    "has_records",
    "load_records",
    "merge",
    "read_file",
    "record_files",
    "runs_filename",
    "runs_files",
    "validate",
    "write_run_record",
]
