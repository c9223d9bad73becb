"""`python -m bench` (what `nox -s bench` runs): run a profile's matrix into a results folder, then write tables.

Examples:
    python -m bench --profile smoke --output /tmp/smoke
    python -m bench --profile quick --tasks sst2 rte --methods plain lora hybrid
    python -m bench --profile paper --executor slurm --slurm-partition gpu --gpus-per-job 1 --max-parallel 32
    python -m bench --profile paper --executor ray --ray-address auto --gpus-per-job 1
    python -m bench --profile paper --shard 3/8          # one of 8 hand-made array tasks; same options on each
    python -m bench --profile paper --launcher "torchrun --standalone --nproc_per_node=4"
    python -m bench --profile quick --list               # the matrix and which runs are done
    python -m bench --profile quick --workers 2 --threads-per-worker 1   # two (model, task, seed) groups at once
    python -m bench --profile quick --tasks sst2 --shift sst2:tweets=/data/tweets.parquet   # one more shift set

Rerunning the same command resumes: finished runs (ok or diverged) are skipped, failed ones too unless
--retry-failed. A run's shift sets are part of its identity: adding one (--shift, or in the profile) runs the
task's runs again (final weights are not kept), and --list shows them as pending. Every run's record is its own
file, OUTPUT/runs.d/<key>.json, whichever executor or shard ran it; OUTPUT/runs.jsonl is compiled from them.

Locally the (model, task, seed) groups run in --workers processes at once, --threads-per-worker torch threads each;
by default sized to the machine (a 2-core CPU: 2 × 1; with a GPU: 1 worker). Each record states its thread count
(hardware.torch_threads): thread counts can change float results in the last digits.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path

from bench import executors, runner, tables
from bench import profiles as prof
from bench import records as rec
from bench.data import resolve_data_dir
from bench.executors import ClusterOptions
from bench.shift import parse_cli_shift
from bench.tasks import task_names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    p.add_argument(
        "--profile", default="quick", help="smoke, quick, paper, or a path to a profile .toml (default quick)"
    )
    p.add_argument("--tasks", nargs="+", help="only these tasks (default: the profile's)")
    p.add_argument("--methods", nargs="+", help="only these methods; 'alpha_sweep' is the α-curve pseudo-method")
    p.add_argument("--seeds", nargs="+", type=int, help="only these seeds (default: the profile's)")
    p.add_argument("--data-dir", help="local data folder (default $HYBRIDFT_DATA_DIR, else the Hugging Face hub)")
    p.add_argument("--shift", action="append", default=[], metavar="TASK:NAME=PATH",
                   help="evaluate TASK's runs also on this parquet file in the task's schema (repeatable); "
                   "registered sets (bench.shift) are always evaluated")  # fmt: skip
    p.add_argument("--shift-dir", help="folder holding the registered shift sets (ood/<name>/test.parquet; default "
                   "$HYBRIDFT_SHIFT_DIR, else the data folder)")  # fmt: skip
    p.add_argument("--output", type=Path, help="results folder (default results/<profile>)")
    p.add_argument("--cache-dir", type=Path, help="stage artifacts and run scratch (default OUTPUT/artifacts)")
    p.add_argument("--shard", help="K/N: run only shard K of N (whole model/task/seed groups, round-robin)")
    p.add_argument("--list", action="store_true", help="print the matrix and which runs are done, run nothing")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed (default: skip them)")
    p.add_argument(
        "--launcher", help='run each run as "<LAUNCHER> -m bench.worker", e.g. "torchrun --nproc_per_node=4"'
    )
    p.add_argument("--no-tables", action="store_true", help="skip writing tables and plots at the end")
    p.add_argument("--strict", action="store_true", help="exit 1 if any run of the matrix failed or is missing (CI)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    p.add_argument("--keep-work", action="store_true", help="keep every run's scratch folder (default: failed only)")
    p.add_argument("--workers", type=int, help="(model, task, seed) groups run at once, each in its own process "
                   "(default: sized to the machine, see --threads-per-worker; 1 with a GPU)")  # fmt: skip
    p.add_argument("--threads-per-worker", type=int, help="torch threads per worker (default: max(1, cores // 4) when "
                   "--workers is sized to the machine; a 2-core machine runs 2 workers × 1 thread)")  # fmt: skip
    cluster = p.add_argument_group("cluster", "Run the matrix as SLURM jobs (submitit) or Ray tasks, one job per "
                                   "(model, task, seed) group; see bench/executors.py. A profile's [cluster] table "
                                   "replaces the defaults below; a flag given here wins over both.")  # fmt: skip
    cluster.add_argument("--executor", choices=("local", "slurm", "ray"), default="local",
                         help="local: this process (default); slurm: submitit jobs; ray: Ray tasks")  # fmt: skip
    cluster.add_argument("--max-parallel", type=int, help="jobs in flight at once (default 2)")
    cluster.add_argument("--cpus-per-job", type=int, help="CPUs each job asks for (default 2)")
    cluster.add_argument("--gpus-per-job", type=int, help="GPUs each job asks for (default 0)")
    cluster.add_argument("--timeout-min", type=int, help="SLURM time limit per job (default 240)")
    cluster.add_argument("--slurm-partition", help="SLURM partition (default: the cluster's)")
    cluster.add_argument("--submitit-cluster", choices=("slurm", "local", "debug"),
                         help="with --executor slurm: submitit's local executor ('local') runs the jobs as "
                         "processes here, to try a setup without SLURM (default slurm)")  # fmt: skip
    cluster.add_argument("--ray-address", help="a running Ray cluster (default: start a local one)")
    p.add_argument("--report-to", choices=("profile", "none", "tensorboard"), default="profile",
                   help="TensorBoard event files under OUTPUT/tensorboard/<run>/ (default: as the profile says; "
                   "on in quick and paper)")  # fmt: skip
    return p.parse_args(argv)


def data_dir_option(text: str | None) -> str | None:
    path = resolve_data_dir(text)
    return str(path.resolve()) if path is not None else None


def parse_shifts(values: list[str]) -> dict[str, list[str]]:
    """--shift TASK:NAME=PATH values → task → ["NAME=PATH", ...]; exits naming a bad value."""
    out: dict[str, list[str]] = {}
    for text in values:
        try:
            task, spec = parse_cli_shift(text)
        except (ValueError, FileNotFoundError) as err:
            sys.exit(f"--shift: {err}")
        out.setdefault(task, []).append(spec)
    return out


def list_matrix(specs: list[prof.RunSpec], output: Path) -> None:
    """One line per run with its recorded status (or 'pending') and its shift sets, then the counts.

    A run recorded with other shift sets has another key, so it shows as pending: it will run again."""
    status = {r["key"]: r["status"] for r in rec.load_records(output)}
    counts: dict[str, int] = {}
    for i, spec in enumerate(specs, start=1):
        state = status.get(spec.key, "pending")
        counts[state] = counts.get(state, 0) + 1
        names = [s.partition("=")[0] for s in spec.config.shifts]
        print(f"{i:4d} {state:8s} {spec.key} {spec.label()}" + (f" +shift {','.join(names)}" if names else ""))
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "empty matrix")
    if any(spec.config.shifts for spec in specs):
        print("shift sets are part of a run's identity: a run finished without one of its sets is pending and "
              "runs again (final weights are not kept)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.exit("run the bench as one process and give torchrun/accelerate to --launcher (see --help)")
    runner.environment_defaults()
    profile = prof.load_profile(args.profile)
    data_dir = data_dir_option(args.data_dir)
    output = args.output or Path("results") / profile.name
    if args.tasks:
        unknown = sorted(set(args.tasks) - set(task_names()))
        if unknown:
            sys.exit(f"--tasks: unknown {unknown}; known tasks: {', '.join(task_names())}")
    extra_shifts = parse_shifts(args.shift)
    specs = prof.build_matrix(profile, tasks=args.tasks, methods=args.methods, seeds=args.seeds, data_dir=data_dir,
                              extra_shifts=extra_shifts, shift_dir=args.shift_dir)  # fmt: skip
    shard = prof.parse_shard(args.shard) if args.shard else None
    if shard:
        specs = prof.shard(specs, *shard)
    if args.list:
        print(
            f"profile {profile.name}: {profile.description}"
            + (f" [needs {', '.join(profile.requires)}]" if profile.requires else "")
        )
        list_matrix(specs, output)
        return 0
    workers, threads = worker_counts(args)
    output.mkdir(parents=True, exist_ok=True)
    opts = runner.BenchOptions(
        output=output,
        cache_dir=args.cache_dir or runner.default_cache_dir(output),
        retry_failed=args.retry_failed,
        launcher=runner.python_launcher(args.launcher),
        progress=not args.no_progress,
        keep_work=args.keep_work,
        report_to=profile.report_to
        if args.report_to == "profile"
        else tuple(x for x in [args.report_to] if x != "none"),
        workers=workers,
        threads_per_worker=threads,
    )

    def _terminate(signum, frame):  # SIGTERM (a scheduler, pkill) stops like Ctrl-C: the session is still recorded
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    keys = {s.key for s in specs}
    before = keys & rec.finished_keys(rec.load_records(output))
    cached_at_start = runner.cached_artifacts(opts.cache_dir)
    started = time.perf_counter()
    interrupted = True
    try:
        if args.executor == "local":
            runner.run_matrix(specs, profile, opts)
        else:
            executors.run(specs, profile.name, opts, cluster_options(args, profile))
        interrupted = False
    finally:
        ran = len(keys & rec.finished_keys(rec.load_records(output)) - before)
        if ran:
            runner.record_session(opts, profile, matrix=len(specs), ran=ran, wall_s=time.perf_counter() - started,
                                  cached_at_start=cached_at_start, interrupted=interrupted)  # fmt: skip
    if not args.no_tables:
        tables.write_all(output)
        print(f"tables and plots written to {output}")
    return strict_status(specs, output) if args.strict else 0


def worker_counts(args: argparse.Namespace) -> tuple[int, int | None]:
    """(workers, threads per worker) from --workers / --threads-per-worker, else sized to the machine
    (`bench.runner.default_workers`); exits naming a bad value. With --launcher or a cluster executor the runs are
    already processes of their own: one local worker, and --workers is refused."""
    for name in ("workers", "threads_per_worker"):
        value = getattr(args, name)
        if value is not None and value < 1:
            sys.exit(f"--{name.replace('_', '-')} must be an integer >= 1, got {value}")
    if args.launcher or args.executor != "local":
        if args.workers not in (None, 1):
            sys.exit(f"--workers {args.workers} runs local worker processes; it does not combine with "
                     f"{'--launcher' if args.launcher else '--executor ' + args.executor} (use --max-parallel there)")  # fmt: skip
        return 1, args.threads_per_worker
    if args.workers is None:
        workers, threads = runner.default_workers()
        return workers, args.threads_per_worker or threads
    return args.workers, args.threads_per_worker or (1 if args.workers > 1 else None)


def cluster_options(args: argparse.Namespace, profile: prof.Profile):
    """`bench.executors.ClusterOptions` from the --executor flags over the profile's [cluster] table over the
    defaults; exits naming a bad value or an unknown [cluster] key."""
    known = {f.name for f in dataclasses.fields(ClusterOptions)} - {"executor", "extra"}
    settings = {k: v for k, v in profile.cluster.items() if k in known}
    extra = {k: v for k, v in profile.cluster.items() if k not in known}  # more submitit parameters
    settings.update({k: getattr(args, k) for k in known if getattr(args, k) is not None})
    try:
        return ClusterOptions(executor=args.executor, extra=extra, **settings)
    except (TypeError, ValueError) as err:
        sys.exit(str(err))


def strict_status(specs: list[prof.RunSpec], output: Path) -> int:
    """1 (after naming them) if a run of the matrix has no finished record, else 0."""
    status = {r["key"]: r["status"] for r in rec.load_records(output)}
    bad = [s for s in specs if status.get(s.key) not in rec.FINISHED]
    for spec in bad:
        print(f"--strict: {spec.label()} is {status.get(spec.key, 'missing')}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
