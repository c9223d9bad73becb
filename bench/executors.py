"""Where the matrix runs: in this process (``local``), as SLURM jobs through submitit (``slurm``), or as Ray tasks
(``ray``). The scheduling is theirs; this module only cuts the matrix into jobs and hands them over.

One job = one group: the runs of one (model, task, seed), in matrix order. They share the LP and LP-FT teacher
stages and the teacher logits, so one job computes each of those once. Two groups that do need the same artifact at
the same time (a rerun with another method list, two benches on one folder) do not both compute it: the stage
cache's claim files (`hybridft.claims`) make one wait for the other.

Every job writes each run's record as soon as the run ends (`bench.records.write_run_record`: its own file, no
lock), and skips the runs whose record is already finished. So a job that is killed, preempted or timed out loses
at most the run it was in: its resubmission (submitit requeues it on preemption and timeout; Ray retries a task
whose worker died; rerunning the bench resubmits whatever is missing) picks the group up at that run. The driver
compiles ``runs.jsonl`` from the record files when the jobs are done, and tables come from the records alone, so
they are the same whichever executor produced them.

Concurrency: ``max_parallel`` jobs at once (SLURM: the job array's parallelism; submitit's local executor and Ray:
this driver keeps at most that many in flight).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import records as rec
from bench.profiles import RunSpec
from bench.runner import GroupJob, groups, worker_env

EXECUTORS = ("local", "slurm", "ray")
SUBMITIT_CLUSTERS = ("slurm", "local", "debug")
# Environment a worker needs as the driver has it: offline switches, data and cache folders, the interpreter's path.
ROOT = Path(__file__).resolve().parent.parent  # the checkout: workers import `bench` from here


@dataclass(frozen=True)
class ClusterOptions:
    """How jobs are submitted (``python -m bench --help`` names each flag)."""

    executor: str = "local"
    max_parallel: int = 2
    cpus_per_job: int = 2
    gpus_per_job: int = 0
    timeout_min: int = 240
    slurm_partition: str | None = None
    submitit_cluster: str = "slurm"  # "local" / "debug": submitit's own executors, for trying it on one machine
    ray_address: str | None = None  # None: a local Ray cluster of cpus_per_job × max_parallel CPUs
    extra: dict[str, Any] = field(default_factory=dict)  # more submitit parameters, e.g. slurm_account

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.submitit_cluster not in SUBMITIT_CLUSTERS:
            raise ValueError(f"--submitit-cluster must be one of {', '.join(SUBMITIT_CLUSTERS)}, got "
                             f"{self.submitit_cluster!r}")  # fmt: skip
        for name in ("max_parallel", "cpus_per_job", "timeout_min"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {getattr(self, name)!r}")
        if not (isinstance(self.gpus_per_job, int) and self.gpus_per_job >= 0):
            raise ValueError(f"--gpus-per-job must be an integer >= 0, got {self.gpus_per_job!r}")


def _capped(items: list, start: Callable[[Any], Any], wait_one: Callable[[list], tuple[list, list]], cap: int):
    """Start ``items`` with at most ``cap`` in flight; ``wait_one(pending) -> (finished, still pending)``."""
    queue, pending, finished = list(items), [], []
    while queue or pending:
        while queue and len(pending) < cap:
            pending.append(start(queue.pop(0)))
        done, pending = wait_one(pending)
        finished += done
    return finished


def run_submitit(specs: list[RunSpec], profile: str, opts, cluster: ClusterOptions, log=print) -> None:
    """One submitit job per group: a SLURM job array capped at ``max_parallel``, or submitit's local executor."""
    import submitit  # noqa: PLC0415  heavy optional: submitit (the cluster extra)

    job = GroupJob(profile, opts, worker_env())
    executor = submitit.AutoExecutor(folder=opts.output / "submitit", cluster=cluster.submitit_cluster)
    params = {"timeout_min": cluster.timeout_min, "cpus_per_task": cluster.cpus_per_job,
              "gpus_per_node": cluster.gpus_per_job, "slurm_array_parallelism": cluster.max_parallel,
              "slurm_partition": cluster.slurm_partition, **cluster.extra}  # fmt: skip
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    work = groups(specs)
    os.environ.update(job.env)  # local executors start their workers from this process's environment
    if cluster.submitit_cluster == "slurm":
        jobs = executor.map_array(job, work)
        log(f"submitted {len(jobs)} SLURM jobs (array {jobs[0].job_id.split('_')[0]}), at most "
            f"{cluster.max_parallel} at once; logs in {opts.output / 'submitit'}")  # fmt: skip
        results = [_result(j, log) for j in jobs]
    else:

        def wait_one(pending):
            while not any(j.done() for j in pending):
                time.sleep(1.0)
            return [j for j in pending if j.done()], [j for j in pending if not j.done()]

        results = [_result(j, log) for j in _capped(work, lambda g: executor.submit(job, g), wait_one,
                                                     cluster.max_parallel)]  # fmt: skip
    log(f"{sum(r is not None for r in results)} of {len(results)} jobs finished")


def _result(job, log):
    """A finished job's result, or None after logging why it failed (its runs stay missing and rerun next time)."""
    try:
        return job.result()
    except Exception as err:  # a failed job is reported; the bench goes on with the others
        log(f"job {job.job_id} failed: {type(err).__name__}: {str(err)[-500:]}")
        return None


def run_ray(specs: list[RunSpec], profile: str, opts, cluster: ClusterOptions, log=print) -> None:
    """One Ray task per group (retried if its worker process dies), at most ``max_parallel`` in flight."""
    import ray  # noqa: PLC0415  heavy optional: ray (the cluster extra)

    job = GroupJob(profile, opts, worker_env())
    runtime_env = {"env_vars": job.env}
    if cluster.ray_address:
        ray.init(address=cluster.ray_address, runtime_env=runtime_env, ignore_reinit_error=True)
    else:
        ray.init(num_cpus=cluster.cpus_per_job * cluster.max_parallel, num_gpus=cluster.gpus_per_job or None,
                 runtime_env=runtime_env, include_dashboard=False, ignore_reinit_error=True)  # fmt: skip
    task = ray.remote(num_cpus=cluster.cpus_per_job, num_gpus=cluster.gpus_per_job, max_retries=2)(_ray_group)
    work = groups(specs)
    failures = 0
    try:
        for ref in _capped(work, lambda g: task.remote(job, g), lambda p: ray.wait(p, num_returns=1),
                           cluster.max_parallel):  # fmt: skip
            try:
                ray.get(ref)
            except Exception as err:  # the group's missing runs rerun next time; the others are recorded
                failures += 1
                log(f"Ray task failed: {type(err).__name__}: {str(err)[-500:]}")
    finally:
        if not cluster.ray_address:
            ray.shutdown()  # the local cluster this call started
    log(f"{len(work) - failures} of {len(work)} Ray tasks finished")


def _ray_group(job: GroupJob, specs: list[RunSpec]) -> list[str]:
    return job(specs)


def run(specs: list[RunSpec], profile: str, opts, cluster: ClusterOptions, log=print) -> None:
    """Run what is not finished yet of ``specs`` on ``cluster.executor`` (not ``local``), then compile runs.jsonl."""
    module = "ray" if cluster.executor == "ray" else "submitit"
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"--executor {cluster.executor} needs {module}: pip install -c constraints.txt "
                          "'hybridft[cluster]' (nox -s bench installs it when given --executor)")  # fmt: skip
    done = rec.finished_keys(rec.load_records(opts.output), retry_failed=opts.retry_failed)
    todo = [s for s in specs if s.key not in done]
    log(f"{len(specs)} runs in the matrix, {len(specs) - len(todo)} already done, {len(todo)} to run in "
        f"{len(groups(todo))} jobs on {cluster.executor} → {opts.output / rec.RECORDS_DIR}")  # fmt: skip
    if todo:
        (run_ray if cluster.executor == "ray" else run_submitit)(todo, profile, opts, cluster, log)
    rec.compile_runs(opts.output)
