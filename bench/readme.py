"""Splice a results folder's generated table.md into README.md: `python -m bench.readme results/quick [--check]`.

README numbers are never typed by hand: the block between ``<!-- results:DIR:start -->`` and
``<!-- results:DIR:end -->`` is the protocol header, the headline table and the cost table of DIR/table.md (itself
generated from runs.jsonl by bench.tables), plus the summed wall time of the runs. A second, optional block between
``<!-- results:DIR:ood:start -->`` and ``<!-- results:DIR:ood:end -->`` gets the out-of-distribution and stability
tables (bench.shift_tables) and the measured cost of the shift evaluation. Given a generated Markdown file
instead of a folder (`python -m bench.readme results/trainer/lm_step.md`), the block between
``<!-- results:FILE:start -->`` and ``<!-- results:FILE:end -->`` is that file without its title line.
``--check`` exits 1 when a block is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import records as rec

# the parts of table.md the README shows
SECTIONS = ("### Headline metric", "### Differences vs plain", "### Compute match", "### Cost per run", "### Teachers")
OOD_SECTIONS = ("### Out of distribution", "### Stability over seeds")
OOD_PART = "ood"


def _sections(table_md: str, wanted: tuple[str, ...] = SECTIONS, *, header: bool = True) -> list[str]:
    """The header bullets (``header``) and the wanted '### ' sections of table.md, in file order."""
    head, *parts = table_md.split("\n### ")
    bullets = [line for line in head.splitlines() if line.startswith("- ")]
    chosen = ["\n".join(bullets)] if header else []
    chosen += ["### " + part.strip() for part in parts if ("### " + part).startswith(wanted)]
    return chosen


def shift_cost_line(directory: Path) -> str | None:
    """The measured cost of shift evaluation: Σ shift_eval_time_s over Σ wall_time_s of the runs, or None."""
    runs = [r for r in rec.load_records(directory) if r.get("kind", "run") == "run"]
    shift = sum(float(r.get("shift_eval_time_s") or 0.0) for r in runs)
    if not shift:
        return None
    wall = sum(float(r.get("wall_time_s") or 0.0) for r in runs)
    rest = wall - shift
    return (f"Cost of the shift evaluation (loading, preprocessing and scoring every shift set; each run's "
            f"`shift_eval_time_s`): {shift / 60:.1f} min of the {wall / 60:.1f} min that the {len(runs)} runs took, "
            f"{100 * shift / rest:.1f} % on top of the {rest / 60:.1f} min they take without it.")  # fmt: skip


def _hardware(session: dict) -> str:
    hw = session.get("hardware") or {}
    return str(hw.get("gpu") or f"{hw.get('cpu', '?')} ({hw.get('cpu_count', '?')} cores)")


def session_lines(directory: Path) -> list[str]:
    """One sentence per bench invocation recorded in DIR/sessions.jsonl (bench.runner.record_session)."""
    import json

    path = directory / "sessions.jsonl"
    if not path.is_file():
        return []
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        s = json.loads(raw)
        cached = s.get("cached_artifacts_at_start")
        if s.get("cache_empty_at_start"):
            cache = "from an empty stage cache"
        else:
            cache = f"with {cached} stage artifacts already cached" if cached is not None else "with a warm stage cache"
        setup = ""
        if s.get("venv_setup_s") is not None:
            kind = "building a fresh venv" if s.get("venv_fresh") else "checking the existing venv"
            setup = f"; before it, nox's install step took {s['venv_setup_s'] / 60:.1f} min ({kind})"
        stopped = " (interrupted)" if s.get("interrupted") else ""
        workers = ""  # sessions before --workers ran one run at a time and say nothing
        if s.get("workers") is not None:
            threads = s.get("threads_per_worker")
            workers = f" in {s['workers']} worker{'s' if s['workers'] != 1 else ''}" + (
                f" × {threads} thread{'s' if threads != 1 else ''}" if threads else "")  # fmt: skip
        lines.append(
            f"Measured: `nox -s bench`{stopped} ran {s['runs_executed']} of the {s['matrix_runs']} runs{workers} in "
            f"{s['wall_time_s'] / 60:.1f} min, {cache}, on {_hardware(s)}, git {str(s.get('git_revision'))[:12]}"
            f"{' (dirty)' if s.get('git_dirty') else ''}, started {s.get('started_at', '?')}{setup}"
            + (f" (time reconstructed {s['reconstructed']})." if s.get("reconstructed") else ".")
        )
    return lines


def teacher_pass_line(runs: list[dict]) -> str | None:
    """The teacher-logit pass against the LP-FT stage, in time: median over the runs that have both stages."""
    import statistics

    ratios = []
    for r in runs:
        times = {s.get("stage"): s.get("train_time_s") for s in r.get("stages") or []}
        if times.get("teacher_logits") is not None and times.get("lp_ft"):
            ratios.append(times["teacher_logits"] / times["lp_ft"])
    if not ratios:
        return None
    return (
        f"Teacher-logit pass ÷ LP-FT stage, in time (the records' `stages`): median {statistics.median(ratios):.2f} "
        f"over {len(ratios)} runs, range {min(ratios):.2f}–{max(ratios):.2f}. θ_pre's rows come from the probe's "
        f"features (one matmul), so the pass runs θ_fine alone, forward only, in length-sorted batches."
    )


def block(directory: Path) -> str:
    """The README block for a results folder (markers included)."""
    table_md = (directory / "table.md").read_text(encoding="utf-8")
    runs = rec.load_records(directory)
    wall = sum(float(r.get("wall_time_s") or 0.0) for r in runs)
    name = directory.as_posix()
    extras = "Per-seed scores, the α-sweep table" if "\n### α sweep" in table_md else "Per-seed scores"
    body = "\n\n".join(
        [
            *_sections(table_md),
            *session_lines(directory),
            *([line] if (line := teacher_pass_line(runs)) and "\n### Teachers" in table_md else []),
            f"Wall time of the {len(runs)} runs (sum of each run's `wall_time_s` in `{name}/runs.jsonl`): "
            f"{wall / 60:.1f} min. {extras} and the plots are in `{name}/`.",
        ]
    )
    return f"<!-- results:{name}:start -->\n{body}\n<!-- results:{name}:end -->"


def ood_block(directory: Path) -> str:
    """The README's out-of-distribution block for a results folder (markers included)."""
    table_md = (directory / "table.md").read_text(encoding="utf-8")
    cost = shift_cost_line(directory)
    body = "\n\n".join([*_sections(table_md, OOD_SECTIONS, header=False), *([cost] if cost else [])])
    name = f"{directory.as_posix()}:{OOD_PART}"
    return f"<!-- results:{name}:start -->\n{body}\n<!-- results:{name}:end -->"


def file_block(path: Path) -> str:
    """The README block of one generated Markdown file (a benchmark's summary, e.g. results/trainer/lm_step.md):
    the file without its ``# `` title line (markers included)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = "\n".join(lines).strip()
    name = path.as_posix()
    return f"<!-- results:{name}:start -->\n{body}\n\n(Spliced from `{name}`.)\n<!-- results:{name}:end -->"


def _replace(readme: str, name: str, text: str) -> str:
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + text + tail


def splice(readme: str, directory: Path) -> str:
    """README text with the block for ``directory`` replaced (and its OOD block, where the README has one);
    ValueError if the main block's markers are missing."""
    name = directory.as_posix()
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    if start not in readme or end not in readme:
        raise ValueError(f"README has no '{start}' … '{end}' markers")
    if directory.is_file():
        return _replace(readme, name, file_block(directory))
    readme = _replace(readme, name, block(directory))
    ood = f"{name}:{OOD_PART}"
    if f"<!-- results:{ood}:start -->" in readme and f"<!-- results:{ood}:end -->" in readme:
        readme = _replace(readme, ood, ood_block(directory))
    return readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path,
                        help="results folder with table.md and runs*.jsonl, or one generated .md file")  # fmt: skip
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="file to update (default README.md)")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README block is stale; write nothing")
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    updated = splice(current, args.directory)
    if args.check:
        if updated != current:
            print(f"{args.readme} is stale: run `python -m bench.readme {args.directory.as_posix()}`")
            return 1
        print(f"{args.readme} is up to date with {args.directory.as_posix()}")
        return 0
    args.readme.write_text(updated, encoding="utf-8")
    print(f"updated {args.readme} from {args.directory.as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
