"""Cluster executors (bench.executors): submitit's local executor and a local Ray cluster run the smoke subset
into the same records and tables as a local run; a SIGKILLed job and its resubmission lose and duplicate nothing;
two concurrent local shards on one folder do the same.

"The same tables" means table.md byte for byte without its "Cost per run" section: that section holds measured
seconds, which differ between any two runs of anything."""

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
from bench import tables

REPO = Path(__file__).resolve().parents[2]
MATRIX = ["--profile", "smoke", "--tasks", "sst2", "--methods", "plain", "hybrid", "kd_pre", "--seeds", "0", "1"]
RUNS = 6  # 2 (model, task, seed) groups of 3 runs

pytestmark = pytest.mark.slow


def _args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [*MATRIX, "--data-dir", str(data_dir), "--output", str(out), "--no-progress", *extra]


def _scored(out: Path) -> str:
    """table.md without the cost section (measured seconds)."""
    text = (out / "table.md").read_text()
    head, _, rest = text.partition("### Cost per run")
    _, _, tail = rest.partition("\n### ")
    return head + ("### " + tail if tail else "")


def _records(out: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    by_key = {r["key"]: r for r in lines}
    assert len(by_key) == len(lines) == RUNS, "every run once"
    assert sorted(p.stem for p in rec.record_files(out)) == sorted(by_key)
    assert all(r["status"] == "ok" for r in lines)
    return by_key


@pytest.fixture(scope="module")
def local_run(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    assert cli.main(_args(data_dir, out)) == 0
    return out


def _same_results(out: Path, local: Path) -> None:
    ours, theirs = _records(out), _records(local)
    assert sorted(ours) == sorted(theirs)
    for key, record in ours.items():
        assert record["headline"] == theirs[key]["headline"], record["method"]
    assert _scored(out) == _scored(local)


def test_submitit_local_executor_gives_the_local_tables(data_dir, tmp_path, local_run):
    out = tmp_path / "out"
    assert cli.main(_args(data_dir, out, "--executor", "slurm", "--submitit-cluster", "local")) == 0
    _same_results(out, local_run)
    assert len(list((out / "submitit").glob("*_result.pkl"))) == 2  # one job per (model, task, seed) group


def test_ray_local_cluster_gives_the_local_tables(data_dir, tmp_path, local_run):
    out = tmp_path / "out"
    assert cli.main(_args(data_dir, out, "--executor", "ray", "--max-parallel", "1", "--cpus-per-job", "2")) == 0
    _same_results(out, local_run)


def _bench(data_dir: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench", *_args(data_dir, out, *extra)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_killed_job_and_its_resubmission_lose_and_duplicate_nothing(data_dir, tmp_path, local_run):
    out = tmp_path / "out"
    submitit = ["--executor", "slurm", "--submitit-cluster", "local", "--max-parallel", "1"]
    driver = _bench(data_dir, out, *submitit)
    deadline = time.monotonic() + 300
    while not rec.record_files(out) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    jobs = sorted(out.glob("submitit/*_log.out"))
    assert jobs, "the first job should be running"
    import psutil

    job = psutil.Process(int(jobs[0].name.split("_")[0]))  # the local executor's job id is the pid of its shell
    for proc in [*job.children(recursive=True), job]:  # the worker python process and its shell
        os.kill(proc.pid, signal.SIGKILL)
    log, _ = driver.communicate(timeout=300)
    assert "failed" in log, log
    before = {p.name: p.read_bytes() for p in rec.record_files(out)}
    assert 1 <= len(before) < RUNS, "the kill must land after the first run and before the last"

    again = _bench(data_dir, out, *submitit)
    log, _ = again.communicate(timeout=300)
    assert again.returncode == 0, log
    assert f"{len(before)} already done, {RUNS - len(before)} to run" in log
    assert all(p.read_bytes() == before[p.name] for p in rec.record_files(out) if p.name in before)
    tables.write_all(out, plots=False)
    _same_results(out, local_run)


def test_two_concurrent_local_shards_on_one_folder(data_dir, tmp_path, local_run):
    out = tmp_path / "out"
    shards = [_bench(data_dir, out, "--shard", f"{k}/2", "--no-tables") for k in (1, 2)]
    for proc in shards:
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, log
    tables.write_all(out, plots=False)
    _same_results(out, local_run)


def test_jobs_are_the_model_task_seed_groups_in_matrix_order():
    from bench import profiles as prof
    from bench.runner import groups

    specs = prof.build_matrix(prof.load_profile("smoke"), tasks=["sst2", "rte"], methods=["plain", "hybrid"])
    jobs = groups(specs)
    assert len(jobs) == 4 and sum(len(j) for j in jobs) == len(specs)
    for job in jobs:
        assert len({(s.config.model, s.config.task, s.config.seed) for s in job}) == 1
        assert [s.method for s in job] == ["plain", "hybrid"]


@pytest.mark.parametrize(
    "field, value, message",
    [("executor", "kubernetes", "--executor must be one of"), ("max_parallel", 0, "--max-parallel must be"),
     ("gpus_per_job", -1, "--gpus-per-job must be"), ("submitit_cluster", "pbs", "--submitit-cluster must be")],
)  # fmt: skip
def test_bad_cluster_options_name_the_flag(field, value, message):
    from bench.executors import ClusterOptions

    with pytest.raises(ValueError, match=message):
        ClusterOptions(**{field: value})


def test_cluster_options_come_from_the_flags_over_the_profile_over_the_defaults():
    from bench import profiles as prof

    paper = prof.load_profile("paper")
    options = cli.cluster_options(cli.parse_args(["--executor", "slurm", "--max-parallel", "4"]), paper)
    assert (options.executor, options.max_parallel, options.gpus_per_job, options.timeout_min) == ("slurm", 4, 1, 720)
    assert options.cpus_per_job == 8 and options.submitit_cluster == "slurm" and options.extra == {}
    smoke = prof.load_profile("smoke")
    options = cli.cluster_options(cli.parse_args(["--executor", "ray"]), smoke)
    assert (options.max_parallel, options.cpus_per_job, options.gpus_per_job) == (2, 2, 0)
    custom = prof.parse_profile("x", {"models": ["m"], "tasks": ["sst2"], "methods": ["plain"], "seeds": [0],
                                      "cluster": {"slurm_account": "lab", "max_parallel": 0}})  # fmt: skip
    with pytest.raises(SystemExit, match="--max-parallel must be an integer >= 1"):
        cli.cluster_options(cli.parse_args(["--executor", "slurm"]), custom)
