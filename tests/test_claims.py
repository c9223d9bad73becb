"""Claim files (hybridft.claims): one process computes an artifact, the others wait for it; dead owners time out."""

from __future__ import annotations

import os
import threading
import time

import pytest

from hybridft.claims import claim_path, claimed

FAST = {"poll_s": 0.02, "heartbeat_s": 0.05}


def test_one_computes_and_the_other_waits_for_the_artifact(tmp_path):
    artifact = tmp_path / "stage"
    events, computed = [], []

    def worker(name: str, delay: float):
        time.sleep(delay)
        with claimed(artifact, artifact.exists, **FAST) as mine:
            events.append((name, mine))
            if mine:
                computed.append(name)
                time.sleep(0.3)  # the other worker arrives while this one holds the claim
                artifact.write_text(name)

    threads = [threading.Thread(target=worker, args=(n, d)) for n, d in (("a", 0.0), ("b", 0.1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert computed == ["a"] and sorted(events) == [("a", True), ("b", False)]
    assert artifact.read_text() == "a" and not claim_path(artifact).exists()


def test_a_ready_artifact_needs_no_claim(tmp_path):
    artifact = tmp_path / "stage"
    artifact.write_text("done")
    with claimed(artifact, artifact.exists, **FAST) as mine:
        assert mine is False and not claim_path(artifact).exists()


def test_a_stale_claim_of_a_dead_owner_is_taken_over(tmp_path):
    artifact = tmp_path / "stage"
    claim = claim_path(artifact)
    claim.write_text("elsewhere 12345\n")
    old = time.time() - 60
    os.utime(claim, (old, old))
    with claimed(artifact, artifact.exists, stale_s=10, **FAST) as mine:
        assert mine is True
        assert "elsewhere" not in claim.read_text()  # the claim is ours now
    assert not claim.exists()


def test_a_live_claim_is_waited_for_and_kept_fresh_by_its_heartbeat(tmp_path):
    artifact = tmp_path / "stage"
    claim = claim_path(artifact)
    inside = threading.Event()

    def owner():
        with claimed(artifact, artifact.exists, stale_s=0.5, **FAST) as mine:
            assert mine
            inside.set()
            time.sleep(1.0)  # longer than stale_s: only the heartbeat keeps waiters from taking over
            artifact.write_text("owner")

    thread = threading.Thread(target=owner)
    thread.start()
    inside.wait()
    with claimed(artifact, artifact.exists, stale_s=0.5, **FAST) as mine:
        assert mine is False
    thread.join()
    assert artifact.read_text() == "owner" and not claim.exists()


def test_the_claim_is_released_when_the_computation_fails(tmp_path):
    artifact = tmp_path / "stage"
    with pytest.raises(RuntimeError, match="boom"), claimed(artifact, artifact.exists, **FAST):
        raise RuntimeError("boom")
    assert not claim_path(artifact).exists()
    with claimed(artifact, artifact.exists, **FAST) as mine:
        assert mine is True


def test_under_torchrun_no_rank_waits(tmp_path, monkeypatch):
    artifact = tmp_path / "stage"
    claim_path(artifact).write_text("rank 0\n")  # another rank's claim must not block this one
    monkeypatch.setenv("WORLD_SIZE", "2")
    with claimed(artifact, artifact.exists, **FAST) as mine:
        assert mine is True


def _compute_once(artifact: str, log: str) -> None:
    from pathlib import Path

    artifact_path = Path(artifact)
    with claimed(artifact_path, artifact_path.exists, **FAST) as mine:
        if mine:
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
            time.sleep(0.3)
            tmp = artifact_path.with_suffix(".tmp")
            tmp.write_text("done")
            os.replace(tmp, artifact_path)


def test_across_processes_the_artifact_is_computed_once(tmp_path):
    import multiprocessing

    artifact, log = tmp_path / "stage", tmp_path / "computed.log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_compute_once, args=(str(artifact), str(log))) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * 4
    assert len(log.read_text().splitlines()) == 1 and artifact.read_text() == "done"
