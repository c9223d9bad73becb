"""Run a profile's matrix: skip finished runs, record each run as it ends, go on after a failure.

In-process by default: every run calls `bench.experiment.run_experiment` (or `alpha_sweep`) in this process, so
the stack is imported once. With `--launcher` each run is a subprocess instead,
`<launcher> -m bench.worker SPEC RESULT` — that is how one run uses several GPUs:

    python -m bench --profile paper --launcher "torchrun --standalone --nproc_per_node=4"
    python -m bench --profile paper --launcher "accelerate launch --num_processes 4"

Every rank runs the same training (the Trainer wraps the model in DDP from the launcher's environment); only rank 0
writes the result file, and only this runner process ever writes runs.jsonl.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import logging
import multiprocessing
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench import experiment
from bench import records as rec
from bench.profiles import ALPHA_SWEEP, Profile, RunSpec
from bench.tasks import get_task
from hybridft.provenance import collect

TRACEBACK_TAIL_CHARS = 4000


@dataclass(frozen=True)
class BenchOptions:
    """Where and how a bench runs (the matrix itself comes from the profile)."""

    output: Path
    cache_dir: Path
    retry_failed: bool = False
    launcher: tuple[str, ...] = ()
    progress: bool = True
    keep_work: bool = False
    report_to: tuple[str, ...] = ()  # ("tensorboard",): event files under OUTPUT/tensorboard/<run key>/<stage>
    tensorboard_dir: Path | None = None
    workers: int = 1  # (model, task, seed) groups run at once, each in its own process (`run_parallel`)
    threads_per_worker: int | None = None  # torch threads in each worker (None: torch's default, one process)

    def log_dir(self, spec: RunSpec) -> Path | None:
        """Where this run's TensorBoard event files go (outside its scratch, which is deleted), or None."""
        if "tensorboard" not in self.report_to:
            return None
        root = self.tensorboard_dir or self.output / "tensorboard"
        return root / f"{spec.config.task}-{spec.method}-seed{spec.config.seed}-{spec.key}"


def execute(
    spec: RunSpec,
    *,
    work_dir: Path,
    cache_dir: Path,
    progress: bool,
    log_dir: Path | None = None,
    measure_cpu_memory: bool = False,
) -> dict[str, Any]:
    """Run one cell in this process and return its result fields (the run_experiment dict, or the α curve).

    ``measure_cpu_memory``: only where this process runs this cell alone (the worker), see PeakMemory."""
    if spec.kind == ALPHA_SWEEP:
        curve = experiment.alpha_sweep(
            spec.config, spec.alphas, work_dir=work_dir, cache_dir=cache_dir, progress=progress
        )
        return sweep_result(curve)
    return experiment.run_experiment(spec.config, work_dir=work_dir, cache_dir=cache_dir, progress=progress,
                                     log_dir=log_dir, measure_cpu_memory=measure_cpu_memory)  # fmt: skip


def sweep_result(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """Record fields for an α sweep: the curve, and as headline the best point, its α in the metrics as
    ``oracle_alpha``: chosen on the evaluation split, so an oracle, never a method's choice of α."""
    finite = [p for p in curve if isinstance(p.get("headline"), (int, float)) and p["headline"] == p["headline"]]
    best = max(finite, key=lambda p: p["headline"]) if finite else None
    return {
        "curve": [
            {
                "alpha": p["alpha"],
                "headline": p["headline"],
                "metrics": p.get("metrics", {}),
                **({"shift": p["shift"]} if p.get("shift") else {}),
            }
            for p in curve
        ],
        "metrics": {"oracle_alpha": best["alpha"]} if best else {},
        "headline": best["headline"] if best else None,
        "status": "ok" if best else "diverged",
    }


def execute_launched(
    spec: RunSpec, *, launcher: tuple[str, ...], work_dir: Path, cache_dir: Path, log_dir: Path | None = None
) -> dict:
    """Run one cell as `<launcher> -m bench.worker SPEC RESULT` and read back what rank 0 wrote."""
    spec_path, result_path = work_dir / "spec.json", work_dir / "result.json"
    payload = spec_to_json(spec, cache_dir) | {"log_dir": str(log_dir) if log_dir else None}
    spec_path.write_text(json.dumps(payload, sort_keys=True), encoding="utf-8")
    result_path.unlink(missing_ok=True)
    cmd = [*launcher, "-m", "bench.worker", str(spec_path), str(result_path)]
    code = subprocess.run(cmd, check=False).returncode
    if result_path.is_file():
        payload = json.loads(result_path.read_text(encoding="utf-8"))
        if "error" in payload:
            raise WorkerError(payload["error"])
        if code == 0:
            return payload["result"]
    raise WorkerError({"type": "WorkerExit", "message": f"{shlex.join(cmd)} exited with code {code}",
                       "traceback": ""})  # fmt: skip


class WorkerError(RuntimeError):
    """A launched run failed; carries the worker's error type, message and traceback."""

    def __init__(self, error: dict[str, str]):
        super().__init__(error.get("message", ""))
        self.error = error


def spec_to_json(spec: RunSpec, cache_dir: Path) -> dict[str, Any]:
    return {"config": spec.config.to_dict(), "kind": spec.kind,
            "alphas": list(spec.alphas), "cache_dir": str(cache_dir)}  # fmt: skip


def error_fields(err: BaseException) -> dict[str, Any]:
    """The `error` of a failed record: exception type, message, and the traceback's tail."""
    if isinstance(err, WorkerError):
        return dict(err.error)
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return {"type": type(err).__name__, "message": str(err), "traceback": tb[-TRACEBACK_TAIL_CHARS:]}


def build_record(spec: RunSpec, profile: str, outcome: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """One runs.jsonl line: identity, config, outcome (result fields or error), wall time, provenance."""
    cfg = spec.config
    task = get_task(cfg.task)
    config = {k: v for k, v in cfg.to_dict().items() if k not in ("data_dir", "shift_dir")}
    record = {
        "key": spec.key,
        "kind": spec.kind,
        "task": cfg.task,
        "method": spec.method,
        "seed": cfg.seed,
        "model": cfg.model,
        "profile": profile,
        "task_kind": task.kind,
        "metric_name": task.metric_name,
        "config_hash": cfg.config_hash(),
        "config": config,
        "alphas": list(spec.alphas) if spec.kind == ALPHA_SWEEP else None,
        "wall_time_s": round(wall_s, 3),
        **outcome,
        **collect(),
    }
    record.setdefault("status", "ok")
    record.setdefault("world_size", 1)  # processes that trained together (a launched DDP run reports its own)
    if record["status"] != "failed":
        record.setdefault("headline_metric", task.headline)  # an α sweep's points use the task's headline
    return record


def run_one(spec: RunSpec, profile: str, opts: BenchOptions) -> dict[str, Any]:
    """Run one cell, turning any exception into a failed record; the record is returned, not yet written."""
    work_dir = opts.cache_dir / "work" / spec.key
    work_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        log_dir = opts.log_dir(spec)
        if opts.launcher:
            outcome = execute_launched(
                spec, launcher=opts.launcher, work_dir=work_dir, cache_dir=opts.cache_dir, log_dir=log_dir
            )
        else:
            outcome = execute(spec, work_dir=work_dir, cache_dir=opts.cache_dir, progress=opts.progress,
                              log_dir=log_dir)  # fmt: skip
        outcome = dict(outcome)
    except Exception as err:  # a failed run is recorded and the bench goes on; Ctrl-C still stops it
        outcome = {"status": "failed", "error": error_fields(err)}
    wall = time.perf_counter() - start
    if outcome["status"] != "failed" and not opts.keep_work:
        shutil.rmtree(work_dir, ignore_errors=True)  # keep the scratch of failed runs for debugging
    return build_record(spec, profile, outcome, wall)


def summary_line(record: dict[str, Any]) -> str:
    """A run's outcome in one line: status, headline, wall time (or the error)."""
    if record["status"] == "failed":
        err = record["error"]
        return f"FAILED {err['type']}: {err['message'][:200]}"
    head = record.get("headline")
    head_text = f"{record.get('headline_metric', 'headline')}={head:.4f}" if isinstance(head, float) else "no score"
    return f"{record['status']} {head_text} ({record['wall_time_s']:.1f}s)"


def run_matrix(specs: list[RunSpec], profile: Profile, opts: BenchOptions, group: bool = True) -> list[dict[str, Any]]:
    """Run every spec not finished yet (per records in the output folder), appending each record as it ends; with
    ``opts.workers`` > 1 and more than one job to run, in parallel worker processes. A job is a (model, task, seed)
    group, whose runs share cached stages, or with ``group=False`` (runs that share nothing, as a sweep's) one run."""
    done = rec.finished_keys(rec.load_records(opts.output), retry_failed=opts.retry_failed)
    todo = [s for s in specs if s.key not in done]
    jobs = groups(todo) if group else [[spec] for spec in todo]
    workers = min(opts.workers, len(jobs))
    print(f"{len(specs)} runs in the matrix, {len(specs) - len(todo)} already done, {len(todo)} to run "
          f"→ {opts.output / rec.RECORDS_DIR}" + (f" ({workers} workers × {opts.threads_per_worker or 1} "
          f"threads)" if workers > 1 else ""), flush=True)  # fmt: skip
    if workers > 1:
        return run_parallel(jobs, profile, opts, workers)
    written = []
    with torch_threads(opts.threads_per_worker):
        bar = tqdm(todo, desc="bench", unit="run", disable=not opts.progress or not todo, dynamic_ncols=True)
        for i, spec in enumerate(bar, start=1):
            bar.set_description(f"bench {spec.label()}")
            record = run_one(spec, profile.name, opts)
            if rec.write_run_record(opts.output, record):
                written.append(record)
            rec.compile_runs(opts.output)
            tqdm.write(f"[{i}/{len(todo)}] {spec.label()}: {summary_line(record)}")
        bar.close()
    return written


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run a block with torch.set_num_threads(count) (None: leave it), restoring the previous count after."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_workers(cpus: int | None = None, gpus: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) sized to the machine: on CPU, threads = max(1, cores // 4) and workers = cores //
    threads (a 2-core machine runs 2 × 1, 8 cores 4 × 2, 16 cores 4 × 4); with a GPU, one worker with every core
    (runs on one device do not overlap)."""
    cpus = cpus if cpus is not None else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)  # fmt: skip
    if gpus is None:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        return 1, cpus
    threads = max(1, cpus // 4)
    return max(1, cpus // threads), threads


def _worker_init(env: dict[str, str], threads: int) -> None:
    """A worker process's start: the driver's environment, its thread count, and death with the driver (Linux: a
    killed driver leaves no worker writing records behind it)."""
    os.environ.update(env)
    # not Linux (OSError, AttributeError): the driver's Ctrl-C still reaches its process group
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    torch.set_num_threads(threads)


def run_parallel(jobs: list[list[RunSpec]], profile: Profile, opts: BenchOptions, workers: int) -> list[dict]:
    """Run the groups in ``workers`` processes at once (spawned, ``opts.threads_per_worker`` torch threads each),
    each group's runs in matrix order by `GroupJob`, which writes each record as its run ends and
    skips finished ones. One progress line for the whole matrix (runs done, elapsed, ETA), fed from the records
    folder; each run's outcome is printed when its group ends. Returns the records the workers wrote."""
    threads = opts.threads_per_worker or 1
    env = worker_env() | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    job = GroupJob(profile.name, replace(opts, progress=False), env)  # workers draw no bars of their own
    keys = {spec.key for group in jobs for spec in group}
    before = keys & rec.finished_keys(rec.load_records(opts.output), retry_failed=opts.retry_failed)
    bar = tqdm(total=len(keys - before), desc=f"bench ({workers} workers)", unit="run", disable=not opts.progress,
               dynamic_ncols=True)  # fmt: skip
    jobs = longest_first(jobs, past_records(opts.output))
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(env, threads))
    try:
        pending = {pool.submit(job, group) for group in jobs}
        while pending:
            finished, pending = wait(pending, timeout=5.0, return_when=FIRST_COMPLETED)
            now = keys & rec.finished_keys(rec.load_records(opts.output), retry_failed=opts.retry_failed)
            bar.update(len(now - before) - bar.n)
            for future in finished:
                for line in future.result():
                    tqdm.write(line)
    except BaseException:  # Ctrl-C, SIGTERM, a worker that died: stop every worker now, not after its group
        pool.shutdown(wait=False, cancel_futures=True)
        for child in multiprocessing.active_children():
            child.terminate()
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
    rec.compile_runs(opts.output)
    written = keys & rec.finished_keys(rec.load_records(opts.output)) - before
    return [r for r in rec.load_records(opts.output) if r.get("key") in written]


def past_records(output: Path) -> list[dict[str, Any]]:
    """The records of ``output`` and of the superseded runs kept under it (``superseded/runs*.jsonl``): what
    `longest_first` estimates run times from."""
    past = list(rec.load_records(output))
    for path in sorted((output / "superseded").glob("runs*.jsonl")):
        past += rec.read_file(path)
    return past


def longest_first(jobs: list[list[RunSpec]], past: list[dict[str, Any]]) -> list[list[RunSpec]]:
    """``jobs`` in descending order of expected time, so that with several workers the long jobs start first and no
    long one runs alone at the end (longest-processing-time scheduling). A job's estimate is the sum over its runs
    of the mean wall time of earlier runs of the same (task, method) in ``past`` (else of the task, else of all);
    with no past at all the order is kept."""
    walls: dict[tuple, list[float]] = {}
    for r in past:
        if r.get("status") == "ok" and isinstance(r.get("wall_time_s"), (int, float)):
            for key in ((r["task"], r["method"]), (r["task"],), ()):
                walls.setdefault(key, []).append(r["wall_time_s"])
    if not walls:
        return list(jobs)

    def estimate(spec: RunSpec) -> float:
        for key in ((spec.config.task, spec.config.method), (spec.config.task,), ()):
            if key in walls:
                return sum(walls[key]) / len(walls[key])
        return 0.0

    return sorted(jobs, key=lambda job: -sum(estimate(spec) for spec in job))  # stable: ties keep matrix order


SESSIONS_FILE = "sessions.jsonl"


def cached_artifacts(cache_dir: Path) -> int:
    """How many stage artifacts and cached teacher logits the cache holds (0: a bench started from scratch)."""
    return sum(1 for sub in ("stages", "teacher_logits") for p in (cache_dir / sub).glob("*")
               if not p.name.startswith(".") and p.suffix not in (".claim", ".part"))  # fmt: skip


def record_session(opts: BenchOptions, profile: Profile, *, matrix: int, ran: int, wall_s: float,
                   cached_at_start: int, interrupted: bool = False) -> dict[str, Any]:  # fmt: skip
    """Append one line to OUTPUT/sessions.jsonl: how long this bench invocation took, on what, from what cache.

    The docs' stated wall time comes from these lines, never from a typed number. ``venv_setup_s`` is the
    nox install step of the same invocation (``HYBRIDFT_VENV_SETUP_S``, set by noxfile.py) and ``venv_fresh``
    whether it built the venv from nothing; ``workers`` and ``threads_per_worker`` how the matrix ran (None threads:
    torch's default in one process)."""
    setup = os.environ.get("HYBRIDFT_VENV_SETUP_S")
    started_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=wall_s)
    session = {
        "profile": profile.name,
        "matrix_runs": matrix,
        "runs_executed": ran,
        "wall_time_s": round(wall_s, 1),
        "cache_empty_at_start": cached_at_start == 0,
        "cached_artifacts_at_start": cached_at_start,
        "interrupted": interrupted,
        "workers": opts.workers,
        "threads_per_worker": opts.threads_per_worker,
        "venv_setup_s": round(float(setup), 1) if setup else None,
        "venv_fresh": os.environ.get("HYBRIDFT_VENV_FRESH") == "1" if setup else None,
        **collect(),
        "started_at": started_at.isoformat(timespec="seconds"),
    }
    path = opts.output / SESSIONS_FILE
    with rec._locked(path):
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        rec.atomic_write_text(path, old + rec.dumps(session) + "\n")
    return session


def default_cache_dir(output: Path) -> Path:
    """Stage artifacts and per-run scratch live in OUTPUT/artifacts (git-ignored under results/)."""
    return output / "artifacts"


def python_launcher(text: str | None) -> tuple[str, ...]:
    """Split a --launcher string; a bare 'python' means this interpreter (a subprocess per run, no DDP)."""
    if not text:
        return ()
    parts = tuple(shlex.split(text))
    return (sys.executable, *parts[1:]) if parts and parts[0] == "python" else parts


class _ExpectedNewHead(logging.Filter):
    """Drops transformers' "Some weights ... are newly initialized" warning: every run that adds a task head to a
    pretrained encoder gets it, and a benchmark user expects it. Other warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "newly initialized" not in record.getMessage()


EXPECTED_WARNING_LOGGERS = ("transformers.modeling_utils", "transformers.utils.loading_report")


def environment_defaults() -> None:
    """Quiet and deterministic defaults for child libraries, unless the user set them; the expected new-head warning
    of transformers silenced (`_ExpectedNewHead`)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in EXPECTED_WARNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ExpectedNewHead) for f in logger.filters):
            logger.addFilter(_ExpectedNewHead())


ROOT = Path(__file__).resolve().parent.parent  # the checkout: workers import `bench` from here
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM", "TRITON_INTERPRET",
                 "HYBRIDFT_DATA_DIR", "HYBRIDFT_SHIFT_DIR", "HYBRIDFT_MODEL_CACHE", "HF_HOME")  # fmt: skip


def groups(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """The runs of each (model, task, seed), in matrix order: the unit a job runs."""
    out: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        out.setdefault((spec.config.model, spec.config.task, spec.config.seed), []).append(spec)
    return list(out.values())


class GroupJob:
    """Runs one group's unfinished runs, writing each record as it ends. Picklable (submitit and Ray ship it to the
    worker); ``checkpoint`` makes submitit requeue it, with the same group, on preemption or timeout."""

    def __init__(self, profile: str, opts, env: dict[str, str]):
        self.profile, self.opts, self.env = profile, opts, dict(env)

    def __call__(self, specs: list[RunSpec]) -> list[str]:
        os.environ.update(self.env)
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        environment_defaults()
        done = rec.finished_keys(rec.load_records(self.opts.output), retry_failed=self.opts.retry_failed)
        statuses = []
        for spec in specs:
            if spec.key in done:
                continue
            record = run_one(spec, self.profile, self.opts)
            rec.write_run_record(self.opts.output, record)
            statuses.append(f"{spec.label()}: {summary_line(record)}")
        return statuses

    def checkpoint(self, specs: list[RunSpec]):
        import submitit  # noqa: PLC0415  heavy optional: submitit (the cluster extra)

        return submitit.helpers.DelayedSubmission(self, specs)


def worker_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


__all__ = ["BenchOptions", "build_record", "default_workers", "execute", "longest_first", "past_records", "run_matrix",
           "run_one", "run_parallel", "summary_line", "sweep_result", "torch_threads"]  # fmt: skip
