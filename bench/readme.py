"""Splice a results folder's generated tables into the docs: `python -m bench.readme results/quick [--check]`.

Numbers in README.md and docs/*.md are never typed by hand. Each results folder DIR can have three blocks, in any of
those files:

- ``<!-- results:DIR:start -->`` … ``<!-- results:DIR:end -->``: the protocol header, the headline, difference,
  compute-match and cost tables of DIR/table.md (itself generated from runs.jsonl by bench.tables), the measured
  time of each bench invocation (DIR/sessions.jsonl) and the summed wall time of the runs;
- ``<!-- results:DIR:ood:start -->`` … ``:ood:end``: the out-of-distribution and stability tables
  (bench.shift_tables) and the measured cost of the shift evaluation;
- ``<!-- results:DIR:headline:start -->`` … ``:headline:end``: the headline table alone with the measured time (the
  README's short form).

Given ``verdict`` instead of a folder (`python -m bench.readme verdict`), the block between ``<!-- results:verdict:start
-->`` and ``<!-- results:verdict:end -->`` is the verdict over every folder under results/ (`bench.verdict`): each
hybrid-family method against its matched baseline, from the records.

Given a generated Markdown file instead of a folder (`python -m bench.readme results/trainer/lm_step.md`), the block
between ``<!-- results:FILE:start -->`` and ``<!-- results:FILE:end -->`` is that file without its title line.
Without ``--readme`` every file among README.md and docs/*.md that holds one of the blocks is updated (an error names
the markers when none does). ``--check`` exits 1 when a block is stale and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bench import records as rec
from bench import verdict

# the parts of table.md the README shows
SECTIONS = (
    "### Headline metric",
    "### Differences vs plain",
    "### Compute match",
    "### Cost per run",
    "### Teachers",
    "### α sweep",
)
OOD_SECTIONS = ("### Out of distribution", "### Stability over seeds")
OOD_PART = "ood"
HEADLINE_PART = "headline"
DOC_FILES = ("README.md", "docs/*.md")  # where blocks are looked for, relative to the working directory
VERDICT = "verdict"  # the target name of the verdict block
RESULTS = Path("results")  # the folders the verdict reads, relative to the working directory


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
        setup, command = "", "python -m bench"  # what nox -s bench runs too; the session says nox only if it ran
        if s.get("venv_setup_s") is not None:
            command = "nox -s bench"
            kind = "building a fresh venv" if s.get("venv_fresh") else "checking the existing venv"
            setup = f"; before it, nox's install step took {s['venv_setup_s'] / 60:.1f} min ({kind})"
        stopped = " (interrupted)" if s.get("interrupted") else ""
        workers = ""  # sessions before --workers ran one run at a time and say nothing
        if s.get("workers") is not None:
            threads = s.get("threads_per_worker")
            workers = f" in {s['workers']} worker{'s' if s['workers'] != 1 else ''}" + (
                f" × {threads} thread{'s' if threads != 1 else ''}" if threads else "")  # fmt: skip
        lines.append(
            f"Measured: `{command}`{stopped} ran {s['runs_executed']} of the {s['matrix_runs']} runs{workers} in "
            f"{s['wall_time_s'] / 60:.1f} min, {cache}, on {_hardware(s)}, git {str(s.get('git_revision'))[:12]}"
            f"{' (dirty)' if s.get('git_dirty') else ''}, started {s.get('started_at', '?')}{setup}"
            + (f" (time reconstructed {s['reconstructed']})." if s.get("reconstructed") else ".")
        )
    return lines


def teacher_pass_line(runs: list[dict]) -> str | None:
    """The teacher-logit pass against the LP-FT stage, in time: median over the runs that have both stages."""
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
    extras = "Per-seed scores"
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


def headline_block(directory: Path) -> str:
    """The README's short block for a results folder: the headline table and the measured time (markers included)."""
    table_md = (directory / "table.md").read_text(encoding="utf-8")
    name = f"{directory.as_posix()}:{HEADLINE_PART}"
    body = "\n\n".join([*_sections(table_md, ("### Headline metric",), header=False), *session_lines(directory)])
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


def verdict_block(_: Path) -> str:
    """The verdict block (markers included): `bench.verdict` over every folder under results/."""
    body = verdict.render(RESULTS)
    intro = (f"Generated from the records under `{RESULTS.as_posix()}/` by `python -m bench.readme {VERDICT}` "
             f"(bench/verdict.py); CI checks it with `--check`.")  # fmt: skip
    return f"<!-- results:{VERDICT}:start -->\n{intro}\n\n{body}\n<!-- results:{VERDICT}:end -->"


def _replace(readme: str, name: str, text: str) -> str:
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + text + tail


def _has(text: str, name: str) -> bool:
    return f"<!-- results:{name}:start -->" in text and f"<!-- results:{name}:end -->" in text


def block_names(directory: Path) -> list[str]:
    """The marker names of ``directory``'s blocks: the main one, then (for a folder) its OOD and headline parts."""
    name = directory.as_posix()
    if directory.is_file() or name == VERDICT:
        return [name]
    return [name, f"{name}:{OOD_PART}", f"{name}:{HEADLINE_PART}"]


def splice(readme: str, directory: Path) -> str:
    """The text with every block of ``directory`` it holds replaced; ValueError, naming the markers, if it holds
    none."""
    names = [n for n in block_names(directory) if _has(readme, n)]
    if not names:
        name = directory.as_posix()
        raise ValueError(f"no '<!-- results:{name}:start -->' … '<!-- results:{name}:end -->' markers (nor its "
                         f":{OOD_PART} or :{HEADLINE_PART} parts)")  # fmt: skip
    one = verdict_block if directory.as_posix() == VERDICT else file_block if directory.is_file() else block
    makers = {directory.as_posix(): one}
    makers |= {
        f"{directory.as_posix()}:{OOD_PART}": ood_block,
        f"{directory.as_posix()}:{HEADLINE_PART}": headline_block,
    }
    for name in names:
        readme = _replace(readme, name, makers[name](directory))
    return readme


def doc_files(directory: Path) -> list[Path]:
    """README.md and docs/*.md (in the working directory) that hold a block of ``directory``."""
    found = [Path(p) for pattern in DOC_FILES for p in sorted(Path().glob(pattern))]
    return [p for p in found if any(_has(p.read_text(encoding="utf-8"), n) for n in block_names(directory))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path,
                        help=f"results folder with table.md and runs*.jsonl, one generated .md file, or "
                        f"'{VERDICT}' (every hybrid-family method vs its matched baseline, from results/)")  # fmt: skip
    parser.add_argument("--readme", type=Path, help="the one file to update (default: every file among README.md "
                        "and docs/*.md that holds a block of DIRECTORY)")  # fmt: skip
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is stale; write nothing")
    args = parser.parse_args(argv)
    targets = [args.readme] if args.readme else doc_files(args.directory)
    if not targets:  # no file holds a block: the error names the markers
        targets = [Path("README.md")]
    stale = []
    for path in targets:
        current = path.read_text(encoding="utf-8")
        updated = splice(current, args.directory)
        if updated == current:
            print(f"{path} is up to date with {args.directory.as_posix()}")
        elif args.check:
            stale.append(path)
            print(f"{path} is stale: run `python -m bench.readme {args.directory.as_posix()}`")
        else:
            path.write_text(updated, encoding="utf-8")
            print(f"updated {path} from {args.directory.as_posix()}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
