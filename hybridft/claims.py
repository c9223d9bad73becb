"""Claim files: one worker computes a cached artifact while concurrent workers wait for it, without flock.

Workers on a cluster share the stage cache (LP and LP-FT teachers, teacher logits) through a network file system,
where ``flock`` is unreliable or absent. A worker that needs a missing artifact creates ``<artifact>.claim`` with
``O_CREAT | O_EXCL``, which is atomic on local file systems, on NFS v3 and later and on Lustre. The claim holds
its host and pid, and a background thread refreshes the file's modification time every ``heartbeat_s`` while it
computes. Another worker that finds the claim polls until the artifact is there (and loads it), or until the
claim's modification time is ``stale_s`` old. An old claim means its owner died: SIGKILL, a preempted node. The
waiter then takes the claim over.

A claim only saves duplicated work; correctness never rests on it. Artifacts are still written under a temporary
name and renamed into place, so two workers that both compute one (a claim taken over from a slow owner, clocks
that disagree by more than ``stale_s``) each write a complete copy and the first rename wins.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

STALE_S = 600.0  # a claim not refreshed for this long belongs to a dead worker
HEARTBEAT_S = 30.0
POLL_S = 2.0


def claim_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".claim")


def _try_create(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{socket.gethostname()} {os.getpid()}\n")
    return True


def _take_over_if_stale(path: Path, stale_s: float) -> None:
    """Move a stale claim out of the way (a rename: of two waiters that both saw it stale, one succeeds)."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return
    if age < stale_s:
        return
    grave = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, grave)
        grave.unlink()


class _Heartbeat:
    """Touch the claim every ``interval_s`` until stopped, so waiters can tell a slow owner from a dead one."""

    def __init__(self, path: Path, interval_s: float):
        self.path, self.interval_s = path, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def claimed(
    artifact: Path,
    ready: Callable[[], bool],
    *,
    stale_s: float = STALE_S,
    heartbeat_s: float = HEARTBEAT_S,
    poll_s: float = POLL_S,
) -> Iterator[bool]:
    """Yield True when this process must compute ``artifact`` (it holds the claim until the block ends), False when
    ``ready()`` says another process has finished it. Waits, polling, while a live claim is held elsewhere.

    Under torchrun (WORLD_SIZE > 1) every rank trains every stage together, so no rank may wait for another: there
    the claim is skipped and this yields True unless the artifact is ready."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        yield not ready()
        return
    path = claim_path(Path(artifact))
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        if ready():
            yield False
            return
        if _try_create(path):
            break
        _take_over_if_stale(path, stale_s)
        time.sleep(poll_s)
    try:
        if ready():  # finished between our check and our claim
            yield False
            return
        with _Heartbeat(path, heartbeat_s):
            yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
