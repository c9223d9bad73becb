"""runs.jsonl records: atomic appends, one line per key, retries, merging shard files, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from bench import records as rec
from tests.bench.synthetic import make_record


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_append_roundtrip_is_strict_jsonl(tmp_path):
    path = tmp_path / "runs.jsonl"
    a = make_record("cola", "plain", 0, 0.41)
    b = make_record("rte", "lora", 0, float("nan"), status="diverged", trainable=150_000)
    assert rec.append_record(path, a) and rec.append_record(path, b)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    back = rec.read_file(path)
    assert back[0] == json.loads(rec.dumps(a))
    assert back[1]["headline"] is None and back[1]["status"] == "diverged"  # NaN stored as null, status says why
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_finished_key_is_never_written_twice(tmp_path):
    path = tmp_path / "runs.jsonl"
    first = make_record("cola", "plain", 0, 0.41)
    assert rec.append_record(path, first)
    assert not rec.append_record(path, make_record("cola", "plain", 0, 0.99))
    assert _lines(path) == [json.loads(rec.dumps(first))]


def test_retry_replaces_the_failed_line(tmp_path):
    path = tmp_path / "runs.jsonl"
    other = make_record("rte", "plain", 0, 0.6)
    rec.append_record(path, make_record("cola", "lora", 0, None, status="failed"))
    rec.append_record(path, other)
    rec.append_record(path, make_record("cola", "lora", 0, None, status="failed", timestamp="2026-01-02T00:00:00"))
    assert [r["status"] for r in _lines(path)] == ["ok", "failed"]
    assert rec.append_record(path, make_record("cola", "lora", 0, 0.3))
    lines = _lines(path)
    assert [(r["task"], r["status"]) for r in lines] == [("rte", "ok"), ("cola", "ok")]
    assert len({r["key"] for r in lines}) == 2


@pytest.mark.parametrize("crash_in", ["fsync", "replace"])
def test_a_crash_while_writing_leaves_the_old_file(tmp_path, monkeypatch, crash_in):
    path = tmp_path / "runs.jsonl"
    rec.append_record(path, make_record("cola", "plain", 0, 0.41))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(rec.os, crash_in, crash)
    with pytest.raises(OSError, match="simulated crash"):
        rec.append_record(path, make_record("rte", "plain", 0, 0.6))
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_bad_lines_and_bad_records_are_named(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(rec.dumps(make_record("cola", "plain", 0, 0.4)) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"runs.jsonl:2: not valid JSON"):
        rec.read_file(path)
    with pytest.raises(ValueError, match="missing field 'status'"):
        rec.validate({"key": "k", "task": "t", "method": "m", "seed": 0, "model": "x"})
    with pytest.raises(ValueError, match="status 'done' not in"):
        rec.validate({**make_record("cola", "plain", 0, 0.4), "status": "done"})
    with pytest.raises(ValueError, match="expected a JSON object"):
        rec.validate([1, 2])
    assert rec.read_file(tmp_path / "missing.jsonl") == []


def test_merge_over_shard_files_prefers_finished_then_latest(tmp_path):
    failed = make_record("cola", "lora", 0, None, status="failed", timestamp="2026-01-03T00:00:00")
    ok_old = make_record("rte", "plain", 0, 0.60, timestamp="2026-01-01T00:00:00")
    ok_new = make_record("rte", "plain", 0, 0.62, timestamp="2026-01-02T00:00:00")
    rec.append_record(tmp_path / rec.runs_filename((1, 2)), failed)
    rec.append_record(tmp_path / rec.runs_filename((1, 2)), ok_new)
    rec.append_record(tmp_path / rec.runs_filename((2, 2)), ok_old)
    rec.append_record(tmp_path / rec.runs_filename(), make_record("cola", "lora", 0, 0.3))
    (tmp_path / ".runs.jsonl.123.tmp").write_text("{half a line")  # a leftover temp file is not a runs file
    assert [p.name for p in rec.runs_files(tmp_path)] == ["runs-1-of-2.jsonl", "runs-2-of-2.jsonl", "runs.jsonl"]
    merged = {(r["task"], r["method"]): r for r in rec.load_records(tmp_path)}
    assert len(merged) == 2
    assert merged[("cola", "lora")]["status"] == "ok"
    assert merged[("rte", "plain")]["headline"] == 0.62
    assert rec.finished_keys(merged.values()) == {r["key"] for r in merged.values()}


def test_finished_keys_retry_semantics():
    rows = [make_record("cola", "plain", 0, 0.4), make_record("cola", "lora", 0, None, status="failed"),
            make_record("rte", "plain", 0, 0.5, status="diverged")]  # fmt: skip
    assert rec.finished_keys(rows) == {r["key"] for r in rows}
    assert rec.finished_keys(rows, retry_failed=True) == {rows[0]["key"], rows[2]["key"]}


def _writer(path: str, worker: int, n: int) -> None:
    for i in range(n):
        rec.append_record(path, make_record(f"task{worker}", "plain", i, 0.5))


def test_concurrent_writers_to_one_file_lose_nothing(tmp_path):
    path = tmp_path / "runs.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 8)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    lines = _lines(path)
    assert len(lines) == 32 and len({r["key"] for r in lines}) == 32
    assert sorted(os.listdir(tmp_path)) == ["runs.jsonl"]  # no lock or temporary file left behind


def test_per_run_files_keep_finished_runs_and_replace_failed_ones(tmp_path):
    failed = make_record("cola", "lora", 0, None, status="failed")
    assert rec.write_run_record(tmp_path, failed)
    ok = make_record("cola", "lora", 0, 0.3)
    assert rec.write_run_record(tmp_path, ok)  # the retry replaces the failed record
    assert not rec.write_run_record(tmp_path, make_record("cola", "lora", 0, 0.9))  # a finished one stays
    assert [p.name for p in rec.record_files(tmp_path)] == [f"{ok['key']}.json"]
    assert rec.load_records(tmp_path) == [json.loads(rec.dumps(ok))]
    (tmp_path / rec.RECORDS_DIR / ".tmp-partial.json").write_text("{")  # an interrupted write's leftover
    assert len(rec.load_records(tmp_path)) == 1


def test_compile_runs_is_the_sorted_merge_of_every_source(tmp_path):
    assert rec.compile_runs(tmp_path) is None  # no per-run files: a legacy folder is left as it is
    legacy = make_record("rte", "plain", 0, 0.6)
    rec.append_record(tmp_path / "runs.jsonl", legacy)
    records = [make_record("cola", m, s, 0.5) for m in ("plain", "lora") for s in (0, 1)]
    for r in reversed(records):
        rec.write_run_record(tmp_path, r)
    path = rec.compile_runs(tmp_path)
    lines = path.read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert keys == sorted(r["key"] for r in [legacy, *records])  # the legacy line is kept, every key once
    first = path.read_bytes()
    for r in records:  # another order of writing, the same file
        rec.write_run_record(tmp_path / "again", r)
    rec.append_record(tmp_path / "again" / "runs.jsonl", legacy)
    assert rec.compile_runs(tmp_path / "again").read_bytes() == first
