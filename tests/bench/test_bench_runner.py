"""The runner on real (tiny) runs: resume, failures recorded and retried, launched workers, and the SIGKILL test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import __main__ as cli
from bench import records as rec
from bench import runner

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "bench" / "profiles" / "smoke.toml"


def _bench(*args: str) -> int:
    return cli.main(["--no-progress", "--no-tables", *args])


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture
def broken_lora_profile(tmp_path) -> Path:
    """The smoke profile with an override that makes every lora run fail (an unknown LoRA config field)."""
    path = tmp_path / "smoke_broken.toml"
    path.write_text(SMOKE.read_text() + '\n[[override]]\nmethod = "lora"\nno_such_field = 1\n')
    return path


@pytest.mark.slow
def test_failed_run_is_recorded_bench_goes_on_and_resume_skips(tmp_path, data_dir, monkeypatch, capsys,
                                                              broken_lora_profile):  # fmt: skip
    out = tmp_path / "out"
    args = ["--profile", str(broken_lora_profile), "--tasks", "rte", "--methods", "lora", "plain", "--seeds", "0",
            "--data-dir", str(data_dir), "--output", str(out)]  # fmt: skip
    assert _bench(*args) == 0
    first = {r["method"]: r for r in rec.read_file(out / "runs.jsonl")}  # compiled from runs.d, sorted by key
    assert {m: r["status"] for m, r in first.items()} == {"plain": "ok", "lora": "failed"}
    assert sorted(p.name for p in (out / "runs.d").iterdir()) == sorted(f"{r['key']}.json" for r in first.values())
    plain, lora = first["plain"], first["lora"]
    assert "no_such_field" in lora["error"]["message"] and lora["error"]["traceback"]
    assert plain["headline_metric"] == "accuracy" and 0.0 <= plain["headline"] <= 1.0
    for field in ("trainable_params", "total_params", "train_time_s", "eval_time_s", "peak_memory_mb",
                  "train_samples_per_s", "subsets", "versions", "git_revision", "git_dirty", "hardware"):  # fmt: skip
        assert field in plain, field
    assert plain["key"] == plain["config_hash"] and plain["subsets"]["train"]["size"] == 32

    calls = []
    monkeypatch.setattr(runner, "run_one", lambda spec, *a, **k: calls.append(spec) or pytest.fail("reran"))
    assert _bench(*args) == 0  # everything recorded: nothing runs
    assert _bench(*args, "--strict") == 1  # ... but CI mode reports the failed run
    assert "--strict: rte/lora/seed0/tiny-bert is failed" in capsys.readouterr().err
    assert _bench(*args, "--methods", "plain", "--strict") == 0
    assert calls == []
    monkeypatch.undo()
    assert _bench(*args, "--seeds", "0", "1", "--list") == 0
    listing = capsys.readouterr().out
    assert f"   1 ok       {plain['key']} rte/plain/seed0/tiny-bert" in listing
    assert "1 failed, 1 ok, 2 pending" in listing

    assert _bench(*args, "--retry-failed") == 0  # only the failed run again, replacing its line
    again = {r["method"]: r for r in rec.read_file(out / "runs.jsonl")}
    assert {m: r["status"] for m, r in again.items()} == {"plain": "ok", "lora": "failed"}
    assert again["plain"] == plain and again["lora"]["timestamp"] >= lora["timestamp"]


@pytest.mark.slow
def test_launched_worker_writes_the_same_record(tmp_path, data_dir):
    args = ["--profile", "smoke", "--tasks", "rte", "--methods", "plain", "--seeds", "0", "--data-dir", str(data_dir)]
    assert _bench(*args, "--output", str(tmp_path / "a")) == 0
    assert _bench(*args, "--output", str(tmp_path / "b"), "--launcher", "python") == 0
    (a,), (b,) = rec.read_file(tmp_path / "a" / "runs.jsonl"), rec.read_file(tmp_path / "b" / "runs.jsonl")
    assert a["key"] == b["key"] and b["status"] == "ok"
    assert a["metrics"] == b["metrics"]  # same seed, same data, same CPU: the same scores


@pytest.mark.slow
def test_torchrun_launcher_trains_one_run_on_two_processes(tmp_path, data_dir):
    launcher = "python -m torch.distributed.run --standalone --nproc_per_node=2"
    args = ["--profile", "smoke", "--tasks", "rte", "--methods", "plain", "--seeds", "0", "--data-dir", str(data_dir)]
    assert _bench(*args, "--output", str(tmp_path), "--launcher", launcher) == 0
    (record,) = rec.read_file(tmp_path / "runs.jsonl")
    assert record["status"] == "ok" and record["world_size"] == 2  # DDP really ran (gloo on CPU)
    assert record["headline_metric"] == "accuracy" and 0.0 <= record["headline"] <= 1.0


def _start(out: Path, data_dir: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench", "--profile", "smoke", "--tasks", "rte", "--seeds", "0", "--methods", "plain", "lora",
           "adapter", "--data-dir", str(data_dir), "--output", str(out), "--no-progress", "--no-tables"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_mid_bench_loses_and_duplicates_nothing(tmp_path, data_dir):
    out, runs = tmp_path / "out", tmp_path / "out" / "runs.jsonl"
    proc = _start(out, data_dir)
    deadline = time.monotonic() + 240
    while not (runs.exists() and _lines(runs)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    before = _lines(runs)
    assert 1 <= len(before) < 3, "the kill must land after the first run and before the last"
    assert all(json.loads(line)["status"] == "ok" for line in before)

    proc = _start(out, data_dir)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert f"{len(before)} already done, {3 - len(before)} to run" in log
    after = _lines(runs)
    assert set(before) <= set(after)  # finished runs kept byte for byte
    records = [json.loads(line) for line in after]
    assert sorted(r["method"] for r in records) == ["adapter", "lora", "plain"]
    assert len({r["key"] for r in records}) == 3
    assert all(r["status"] == "ok" for r in records)


def test_sweep_result_takes_the_best_finite_point():
    curve = [{"alpha": 0.0, "headline": 0.61, "metrics": {"accuracy": 0.61}},
             {"alpha": 0.5, "headline": float("nan"), "metrics": {}},
             {"alpha": 1.0, "headline": 0.70, "metrics": {"accuracy": 0.70}}]  # fmt: skip
    result = runner.sweep_result(curve)
    assert (result["headline"], result["metrics"], result["status"]) == (0.70, {"oracle_alpha": 1.0}, "ok")
    assert [p["alpha"] for p in result["curve"]] == [0.0, 0.5, 1.0]
    broken = runner.sweep_result([{"alpha": 0.0, "headline": float("nan")}])
    assert (broken["headline"], broken["status"]) == (None, "diverged")


def test_launcher_strings():
    assert runner.python_launcher(None) == ()
    assert runner.python_launcher("python") == (sys.executable,)
    assert runner.python_launcher("torchrun --standalone --nproc_per_node=4") == (
        "torchrun", "--standalone", "--nproc_per_node=4")  # fmt: skip


def test_error_fields_keep_type_message_and_traceback_tail():
    try:
        raise ValueError("bad lora field 'no_such_field'")
    except ValueError as err:
        fields = runner.error_fields(err)
    assert fields["type"] == "ValueError" and "no_such_field" in fields["message"]
    assert fields["traceback"].rstrip().endswith("ValueError: bad lora field 'no_such_field'")
    long = runner.error_fields(RuntimeError("x" * 10_000))
    assert len(long["traceback"]) == runner.TRACEBACK_TAIL_CHARS


def test_bench_under_torchrun_refuses(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="--launcher"):
        cli.main(["--profile", "smoke", "--list"])


def test_unknown_task_is_named_before_anything_runs(tmp_path):
    with pytest.raises(SystemExit, match=r"--tasks: unknown \['sst3'\]; known tasks: cola"):
        cli.main(["--profile", "smoke", "--tasks", "sst3", "--output", str(tmp_path)])
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_two_workers_write_the_same_records_as_one(tmp_path, data_dir, capsys):
    """Two (model, task, seed) groups run at once in two worker processes give the records one process gives, at
    the same thread count: headline, metrics, FLOPs and per-example statistics."""
    args = ["--profile", "smoke", "--tasks", "rte", "sst2", "--methods", "plain", "lora", "--seeds", "0",
            "--data-dir", str(data_dir), "--threads-per-worker", "1"]  # fmt: skip
    assert _bench(*args, "--output", str(tmp_path / "one"), "--workers", "1") == 0
    assert _bench(*args, "--output", str(tmp_path / "two"), "--workers", "2") == 0
    assert "(2 workers × 1 threads)" in capsys.readouterr().out
    one = {r["key"]: r for r in rec.read_file(tmp_path / "one" / "runs.jsonl")}
    two = {r["key"]: r for r in rec.read_file(tmp_path / "two" / "runs.jsonl")}
    assert sorted(one) == sorted(two) and len(one) == 4
    for key, record in one.items():
        assert record["status"] == two[key]["status"] == "ok"
        for field in ("headline", "metrics", "train_flops", "eval_stats"):
            assert record[field] == two[key][field], (record["method"], record["task"], field)
        assert record["hardware"]["torch_threads"] == two[key]["hardware"]["torch_threads"] == 1


def test_default_workers_fit_the_machine_and_bad_counts_are_refused():
    assert runner.default_workers(cpus=2, gpus=0) == (2, 1)
    assert runner.default_workers(cpus=1, gpus=0) == (1, 1)
    assert runner.default_workers(cpus=8, gpus=0) == (4, 2)
    assert runner.default_workers(cpus=16, gpus=0) == (4, 4)
    assert runner.default_workers(cpus=16, gpus=1) == (1, 16)  # one device: runs do not overlap
    for bad, message in ((["--workers", "0"], "--workers must be an integer >= 1, got 0"),
                         (["--threads-per-worker", "-1"], "--threads-per-worker must be an integer >= 1, got -1"),
                         (["--workers", "2", "--launcher", "python"], "does not combine with --launcher"),
                         (["--workers", "3", "--executor", "ray"], "does not combine with --executor ray")):  # fmt: skip
        with pytest.raises(SystemExit, match=message):
            cli.worker_counts(cli.parse_args(["--profile", "smoke", *bad]))
    assert cli.worker_counts(cli.parse_args(["--workers", "2"])) == (2, 1)
    assert cli.worker_counts(cli.parse_args(["--workers", "1"])) == (1, None)  # one process: torch's own threads
    assert cli.worker_counts(cli.parse_args(["--launcher", "python"]))[0] == 1


def test_the_expected_new_head_warning_is_silenced_and_others_pass(caplog):
    import logging

    runner.environment_defaults()
    runner.environment_defaults()  # idempotent: one filter
    logger = logging.getLogger("transformers.modeling_utils")
    assert sum(isinstance(f, runner._ExpectedNewHead) for f in logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger="transformers.modeling_utils"):
        logger.warning("Some weights of BertForSequenceClassification were not initialized from the model checkpoint "
                       "at x and are newly initialized: ['classifier.bias']")  # fmt: skip
        logger.warning("Some weights of the checkpoint were not used")
    assert [r.getMessage() for r in caplog.records] == ["Some weights of the checkpoint were not used"]


def test_longest_first_starts_the_jobs_expected_to_take_longest():
    """Groups are ordered by the summed past wall time of their (task, method) runs; unknown methods take their
    task's mean, unknown tasks the overall mean; ties and an empty past keep the matrix order."""
    from types import SimpleNamespace

    from bench.runner import longest_first

    def spec(task, method):
        return SimpleNamespace(config=SimpleNamespace(task=task, method=method))

    past = [{"status": "ok", "task": t, "method": m, "wall_time_s": w}
            for t, m, w in [("sst2", "plain", 40.0), ("sst2", "hybrid", 120.0), ("conll2003", "plain", 70.0),
                            ("conll2003", "hybrid", 190.0), ("conll2003", "hybrid", 170.0)]]  # fmt: skip
    past.append({"status": "failed", "task": "sst2", "method": "plain", "wall_time_s": 9999.0})  # ignored
    sst2 = [spec("sst2", "plain"), spec("sst2", "hybrid")]  # 160
    conll = [spec("conll2003", "plain"), spec("conll2003", "hybrid")]  # 250
    sst2_new = [spec("sst2", "lora")]  # unknown method: the SST-2 mean, 80
    stsb = [spec("stsb", "plain")]  # unknown task: the overall mean, 118
    ordered = longest_first([sst2, sst2_new, stsb, conll], past)
    assert ordered == [conll, sst2, stsb, sst2_new]
    assert longest_first([sst2, conll], []) == [sst2, conll]
