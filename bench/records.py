"""Run records: one JSON object per line in DIR/runs*.jsonl, keyed by the run's config hash.

Writes are atomic: the whole new file goes to a temporary file in the same folder, is fsynced, and replaces the old
one with os.replace, so a SIGKILL at any instant leaves either the old or the new file, both valid JSONL. Each
writer also holds an exclusive flock on the folder for its read-modify-write, so two processes writing
the same file (say two benches started by mistake on one folder) never lose each other's lines; a key that is
already finished is not written twice. Shards write their own file (runs-K-of-N.jsonl) so they share nothing,
also on network file systems where flock is unreliable; readers merge every runs*.jsonl in the folder.

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
    """The merged records of every runs file in a results folder."""
    return merge(r for path in runs_files(directory) for r in read_file(path))


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
    "STATUSES",
    "append_record",
    "atomic_write_text",
    "dumps",
    "finished_keys",
    "load_records",
    "merge",
    "read_file",
    "runs_filename",
    "runs_files",
    "validate",
]
