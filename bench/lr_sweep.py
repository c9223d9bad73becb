"""Learning rates for a profile, chosen on the dev split: `python -m bench.lr_sweep [--profile quick]`.

For each method of the grid below and each candidate rate, the profile's budget rule (its [run] settings, seed 0)
is trained on the sweep tasks and scored on the dev split that `RunConfig.dev_size` holds out of the train split
(`eval_on="dev"`, at the profile's own dev_size): the evaluation split is never looked at. The chosen rate of a
method on a task is the one with the best dev headline (%) there, as in BERT's per-task choice; tasks outside the
sweep (the `curves` profile's) take the rate chosen on SST-2, the other single-sentence / sentence-pair
classification task. Records go to OUTPUT/runs.jsonl (resumable, with provenance like every bench run), the summary
to OUTPUT/summary.md; the profile file then carries the chosen rates, and a test checks that it does
(tests/bench/test_lr_sweep_choice.py).

The full-fine-tuning rate is swept on `plain` and used for every stage that trains all weights (plain, the LP-FT
teacher, the hybrid student), so the teacher-stage methods share one teacher recipe. The compute-matched baselines
(`plain_matched`, `lora_matched`) train for more epochs than the method they copy, so `--methods plain_matched` sweeps
them at their own epoch count (the method sizes its epochs itself, as in the benchmark) over their base method's
grid. `--extend` moves the grid one step past a chosen rate that sits at its edge (the ratio of the last two rates,
rounded to one significant figure) and sweeps that method and task there too.

The summary says how large a dev difference is within noise: for each method and task, the chosen rate minus the
runner-up with a 95 % paired bootstrap interval over the dev examples (one seed, so seed-to-seed noise comes on top),
and the sweep's own cost (runs, FLOPs, run time), which is the sweep's and not charged to any benchmark row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench import profiles as prof
from bench import records as rec
from bench import runner, stats
from bench.__main__ import data_dir_option, worker_counts
from bench.experiment import RunConfig
from bench.table_core import TASK_LABELS, fmt_num, score
from bench.tasks import get_task

SWEEP_TASKS = ("sst2", "stsb", "conll2003")
DEFAULT_TASK = "sst2"  # whose choice tasks outside the sweep take
SWEEP_SEED = 0
GRID = {"plain": (3e-5, 1e-4, 3e-4, 1e-3), "adapter": (1e-4, 1e-3, 3e-3, 1e-2), "lora": (5e-4, 2e-3, 5e-3, 1e-2)}
# The compute-matched baselines, swept with --methods at their own epoch count over their base method's grid.
MATCHED_BASE = {"plain_matched": "plain", "lora_matched": "lora"}
# Causal-LM profiles (every task of kind causal_lm): their own tasks, and a smaller grid around the usual rates for
# a 135M decoder (full fine-tuning 2e-5..1e-4; LoRA 5e-4..2e-3), since one SmolLM2 run costs minutes on a CPU.
LM_GRID = {"plain": (2e-5, 5e-5, 1e-4), "lora": (5e-4, 2e-3)}


Plan = dict  # method → task → the rates swept there (ascending)


def sweep_plan(profile: prof.Profile, methods: tuple[str, ...] | None = None,
               tasks: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], Plan]:  # fmt: skip
    """(tasks, method → task → rates) swept for ``profile``: the profile's own tasks and `LM_GRID` when they are
    all causal-LM tasks, else `SWEEP_TASKS` and `GRID`; ``methods`` (default the grid's) may name the matched
    baselines of `MATCHED_BASE`, swept over their base method's rates; ``tasks`` replaces the sweep tasks."""
    lm = all(get_task(task).kind == "causal_lm" for task in profile.tasks)
    grid = LM_GRID if lm else GRID
    tasks = tuple(tasks) if tasks else (tuple(profile.tasks) if lm else SWEEP_TASKS)
    for task in tasks:
        get_task(task)  # an unknown task fails here, naming the registered ones
    known = {**{m: m for m in grid}, **{m: b for m, b in MATCHED_BASE.items() if b in grid}}
    methods = tuple(methods) if methods else tuple(grid)
    bad = [m for m in methods if m not in known]
    if bad:
        raise ValueError(f"--methods {', '.join(bad)}: not swept for profile {profile.name!r}; expected some of "
                         f"{', '.join(known)}")  # fmt: skip
    return tasks, {m: {t: tuple(sorted(grid[known[m]])) for t in tasks} for m in methods}


def step_past(rates: tuple[float, ...], chosen: float) -> float | None:
    """The rate one step past ``chosen`` when it sits at an edge of ``rates`` (the ratio of the two outermost rates
    on that side, rounded to one significant figure), else None."""
    rates = tuple(sorted(rates))
    if len(rates) < 2 or chosen not in (rates[0], rates[-1]):
        return None
    outer, inner = (rates[-1], rates[-2]) if chosen == rates[-1] else (rates[0], rates[1])
    return float(f"{outer * outer / inner:.0e}")


def extend_plan(plan: Plan, records: list[dict]) -> tuple[Plan, list[tuple[str, str, float]]]:
    """``plan`` with one step past every chosen rate at the edge of its (method, task) grid, and what was added."""
    chosen, added = chosen_rates(records), []
    out = {m: dict(by_task) for m, by_task in plan.items()}
    for method, by_task in plan.items():
        for task, rates in by_task.items():
            pick = chosen.get(method, {}).get(task)
            nxt = None if pick is None else step_past(rates, pick)
            if nxt is not None and nxt not in rates:
                out[method][task] = tuple(sorted((*rates, nxt)))
                added.append((method, task, nxt))
    return out, added


def sweep_specs(profile: prof.Profile, data_dir: str | None, plan: Plan | None = None) -> list[prof.RunSpec]:
    """One run per (task, method, rate) of ``plan`` (default `sweep_plan`) at the profile's settings for that
    method, scored on the dev split."""
    if "dev_size" not in profile.run:
        raise ValueError(f"profile {profile.name!r} has no dev_size in [run]: no dev split to sweep on")
    plan = sweep_plan(profile)[1] if plan is None else plan
    tasks = list(dict.fromkeys(t for by_task in plan.values() for t in by_task))
    specs = []
    for model in profile.models:
        for task in tasks:
            for method, by_task in plan.items():
                run_fields, method_args = profile.settings(model, task, method)
                run_fields = {k: v for k, v in run_fields.items() if k != "learning_rate"}
                method_args = tuple((k, v) for k, v in method_args if k != "learning_rate")
                for lr in by_task.get(task, ()):
                    cfg = RunConfig(task=task, method=method, seed=SWEEP_SEED, model=model, learning_rate=lr,
                                    method_args=method_args, data_dir=data_dir,
                                    **{**run_fields, "eval_on": "dev"})  # fmt: skip
                    specs.append(prof.RunSpec(cfg))
    return specs


def dev_scores(records: list[dict]) -> dict[str, dict[str, dict[float, float]]]:
    """method → task → {rate: dev headline (%)}, over the runs that finished ok."""
    out: dict[str, dict[str, dict[float, float]]] = {}
    for r in records:
        value = score(r) if r["status"] == "ok" else None
        if value is not None:
            out.setdefault(r["method"], {}).setdefault(r["task"], {})[r["config"]["learning_rate"]] = value
    return out


def chosen_rates(records: list[dict]) -> dict[str, dict[str, float]]:
    """method → task → the rate with the best dev headline (ties: the smaller rate)."""
    return {method: {task: max(sorted(rates), key=rates.get) for task, rates in by_task.items()}
            for method, by_task in dev_scores(records).items()}  # fmt: skip


def rate_for(chosen: dict[str, dict[str, float]], method: str, task: str) -> float:
    """The chosen rate of ``method`` on ``task`` (the SST-2 choice for a task outside the sweep)."""
    by_task = chosen[method]
    return by_task[task] if task in by_task else by_task[DEFAULT_TASK]


def noise(records: list[dict]) -> list[tuple[str, str, float, float, Any]]:
    """(method, task, chosen, runner-up, `bench.stats.Difference` of chosen − runner-up) for each method and task
    with two or more rates: the paired bootstrap over the dev examples says how large a dev difference is noise."""
    by_rate: dict[tuple[str, str], dict[float, dict]] = {}
    for r in records:
        if r["status"] == "ok":
            by_rate.setdefault((r["method"], r["task"]), {})[r["config"]["learning_rate"]] = r
    scores, chosen, out = dev_scores(records), chosen_rates(records), []
    for (method, task), runs in by_rate.items():
        rates = scores.get(method, {}).get(task, {})
        if len(rates) >= 2:
            first = chosen[method][task]  # the ✓ of the table, by the same rule
            second = max(sorted(lr for lr in rates if lr != first), key=rates.get)  # ties: the smaller rate
            out.append((method, task, first, second, stats.paired_difference([runs[first]], [runs[second]])))
    return out


def summary(records: list[dict], tasks: tuple[str, ...] = SWEEP_TASKS, plan: Plan | None = None,
            command: str = "python -m bench.lr_sweep") -> str:  # fmt: skip
    plan = {m: {t: rates for t in tasks} for m, rates in GRID.items()} if plan is None else plan
    dev_rows = sorted({r["subsets"]["eval"].get("size") or r["config"].get("dev_size") for r in records
                       if r["status"] == "ok"} - {None})  # fmt: skip
    lines = ["# Learning-rate sweep on the dev split", "",
             f"Generated by `{command}` from runs.jsonl; do not edit.", "",
             f"- Tasks: {', '.join(tasks)}; seed {SWEEP_SEED}; scored on the dev split held out of train"
             + (f" ({', '.join(map(str, dev_rows))} rows)" if dev_rows else ""),
             "- Chosen (✓): per method and task, the rate with the best dev headline (%); tasks outside the sweep "
             f"take the {DEFAULT_TASK} choice; \"(edge)\": the choice sits at the edge of the rates swept there", ""]  # fmt: skip
    epochs: dict[str, list[float]] = {}
    for r in records:
        if r["status"] == "ok" and (r.get("method_extra") or {}).get("matched_epochs"):
            epochs.setdefault(r["method"], []).append(r["method_extra"]["matched_epochs"])
    if epochs:
        lines[-1:-1] = [f"- {m} trains at its own epoch count ({min(e):.2f}–{max(e):.2f} epochs over the tasks; its "
                        "FLOPs match the hybrid pipeline's), not at its base method's" for m, e in sorted(epochs.items())]  # fmt: skip
    header = ["Method", "LR", *(TASK_LABELS.get(t, t) for t in tasks)]
    lines += ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * len(tasks)]
    scores, chosen = dev_scores(records), chosen_rates(records)
    for method, by_task in plan.items():
        for lr in sorted({x for rates in by_task.values() for x in rates}):
            row = [method, f"{lr:g}"]
            for task in tasks:
                rates = by_task.get(task, ())
                value = scores.get(method, {}).get(task, {}).get(lr) if lr in rates else None
                pick = chosen.get(method, {}).get(task) == lr
                mark = (" ✓" if pick else "") + (" (edge)" if pick and lr in (rates[0], rates[-1]) else "")
                row.append(fmt_num(value) + mark if value is not None else "–")
            lines.append("| " + " | ".join(row) + " |")
    rows = noise(records)
    if rows:
        lines += ["", "## Within noise?", "",
                  "The chosen rate minus the runner-up on the same dev examples, with the 95 % paired bootstrap "
                  "interval over those examples. An interval that contains 0 means the dev split cannot tell the two "
                  "rates apart; one seed was run, so seed-to-seed noise (larger, see the benchmark tables) comes on "
                  "top.", "",
                  "| Method | Task | Chosen | Runner-up | Difference | 95 % interval (examples) |",
                  "|---|---|---:|---:|---:|---:|"]  # fmt: skip
        for method, task, first, second, d in sorted(
            rows, key=lambda x: (list(plan).index(x[0]) if x[0] in plan else 99, x[1])
        ):
            interval = "–" if d is None or d.boot_low is None else f"[{d.boot_low:+.1f}, {d.boot_high:+.1f}]"
            diff = "–" if d is None else f"{d.diff:+.1f}"
            lines.append(f"| {method} | {TASK_LABELS.get(task, task)} | {first:g} | {second:g} | {diff} | {interval} |")
    ok = [r for r in records if r["status"] == "ok"]
    if ok:
        flops = sum(r.get("train_flops") or 0 for r in ok)
        wall = sum(r.get("wall_time_s") or 0 for r in ok)
        lines += ["", f"Cost of this sweep (the sweep's, charged to no benchmark row): {len(ok)} runs, "
                      f"{flops:.3g} training FLOPs, {wall / 60:.0f} min of run wall time (summed over runs)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lr_sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="quick", help="whose [run] settings and overrides to sweep (default quick)")
    p.add_argument("--methods", nargs="+", help=f"methods to sweep (default the grid's; also {', '.join(MATCHED_BASE)}"
                   " at their own epoch count)")  # fmt: skip
    p.add_argument("--tasks", nargs="+", help=f"tasks to sweep (default {', '.join(SWEEP_TASKS)}, or an LM profile's)")
    p.add_argument("--extend", action="store_true", help="sweep one step past every chosen rate at its grid's edge")
    p.add_argument("--data-dir", help="local data folder (default $HYBRIDFT_DATA_DIR, else the hub)")
    p.add_argument("--output", type=Path, default=Path("results/lr_sweep"))
    p.add_argument("--workers", type=int, help="runs at once, each in its own process (default: sized to the machine)")
    p.add_argument("--threads-per-worker", type=int, help="torch threads per worker")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    runner.environment_defaults()
    profile = prof.load_profile(args.profile)
    try:
        tasks, plan = sweep_plan(profile, args.methods, args.tasks)
    except (KeyError, ValueError) as err:
        p.error(str(err))
    workers, threads = worker_counts(argparse.Namespace(workers=args.workers, launcher=None, executor="local",
                                                        threads_per_worker=args.threads_per_worker))  # fmt: skip
    data_dir = data_dir_option(args.data_dir)
    args.output.mkdir(parents=True, exist_ok=True)
    opts = runner.BenchOptions(output=args.output, cache_dir=runner.default_cache_dir(args.output),
                               progress=not args.no_progress, workers=workers,
                               threads_per_worker=threads)  # fmt: skip
    sweep_profile = prof.Profile(name=f"lr_sweep:{profile.name}", description="learning-rate sweep on the dev split",
                                 models=profile.models, tasks=tasks, methods=tuple(plan), seeds=(SWEEP_SEED,),
                                 run=profile.run)  # fmt: skip

    def run(plan: Plan) -> list[dict]:
        specs = sweep_specs(profile, data_dir, plan)
        runner.run_matrix(specs, sweep_profile, opts, group=False)  # no run shares a stage: one job per run
        keys = {spec.key for spec in specs}
        return [r for r in rec.load_records(args.output) if r["key"] in keys]  # this grid at these settings

    records = run(plan)
    if args.extend:
        plan, added = extend_plan(plan, records)
        if added:
            print("extending past the edge: " + ", ".join(f"{m} {t} {lr:g}" for m, t, lr in added), flush=True)
            records = run(plan)
    command = "python -m bench.lr_sweep" + ("" if profile.name == "quick" else f" --profile {profile.name}")
    command += "".join(
        f" --{name} {' '.join(values)}"
        for name, values in (("methods", args.methods or ()), ("tasks", args.tasks or ()))
        if values
    )
    command += " --extend" if args.extend else ""
    command += "" if str(args.output) == "results/lr_sweep" else f" --output {args.output}"
    text = summary(records, tasks, plan, command)
    rec.atomic_write_text(args.output / "summary.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
