"""bench.readme splices a results folder's generated tables into the README, and --check catches staleness."""

from __future__ import annotations

import pytest

from bench import readme, tables
from bench import records as rec
from tests.bench.synthetic import make_record


def _results(tmp_path):
    out = tmp_path / "results" / "quick"
    out.mkdir(parents=True)
    for method, score in (("plain", 0.81), ("lora", 0.79)):
        rec.append_record(out / "runs.jsonl", make_record("sst2", method, 0, score, wall_time_s=90.0))
    tables.write_all(out, plots=False)
    return out


def test_splice_replaces_only_the_block_and_check_detects_staleness(tmp_path, monkeypatch):
    out = _results(tmp_path)
    monkeypatch.chdir(tmp_path)
    name = "results/quick"
    path = tmp_path / "README.md"
    path.write_text(f"intro\n<!-- results:{name}:start -->\nSTALE-BLOCK\n<!-- results:{name}:end -->\noutro\n")
    assert readme.main([name, "--check"]) == 1
    assert readme.main([name]) == 0
    text = path.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "STALE-BLOCK" not in text
    assert "### Headline metric" in text and "### Cost per run" in text and "### Per seed" not in text
    assert "81.0" in text and "79.0" in text
    assert "Wall time of the 2 runs" in text and "3.0 min" in text
    assert readme.main([name, "--check"]) == 0
    rec.append_record(out / "runs.jsonl", make_record("sst2", "adapter", 0, 0.5, wall_time_s=30.0))
    tables.write_all(out, plots=False)
    assert readme.main([name, "--check"]) == 1


def test_missing_markers_are_named(tmp_path, monkeypatch):
    _results(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("no markers here\n")
    with pytest.raises(ValueError, match="results:results/quick:start"):
        readme.main(["results/quick"])


def test_session_lines_state_the_measured_time_from_the_sessions_file(tmp_path):
    import json

    sessions = [
        {"profile": "quick", "matrix_runs": 54, "runs_executed": 19, "wall_time_s": 741.0, "cache_empty_at_start": True,
         "cached_artifacts_at_start": 0, "interrupted": True, "venv_setup_s": None, "hardware": {"cpu": "Xeon",
         "cpu_count": 2}, "git_revision": "abcdef0123456789", "git_dirty": False, "started_at": "2026-12-01T21:07:43"},
        {"profile": "quick", "matrix_runs": 54, "runs_executed": 35, "wall_time_s": 1800.0,
         "cache_empty_at_start": False, "cached_artifacts_at_start": 9, "interrupted": False, "venv_setup_s": 150.0,
         "venv_fresh": True, "hardware": {"cpu": "Xeon", "cpu_count": 2}, "git_revision": "abcdef0123456789",
         "git_dirty": True, "started_at": "2026-12-01T22:00:00", "workers": 2, "threads_per_worker": 1},
        {"profile": "quick", "matrix_runs": 54, "runs_executed": 54, "wall_time_s": 60.0, "cache_empty_at_start": True,
         "workers": 1, "threads_per_worker": None, "hardware": {"gpu": "H100"}, "started_at": "2026-12-02T00:00:00"},
    ]  # fmt: skip
    (tmp_path / "sessions.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sessions))
    first, second, third = readme.session_lines(tmp_path)
    assert "(interrupted) ran 19 of the 54 runs in 12.3 min, from an empty stage cache, on Xeon (2 cores)" in first
    assert "ran 35 of the 54 runs in 2 workers × 1 thread in 30.0 min, with 9 stage artifacts already cached" in second
    assert "(dirty)" in second and "ran 54 of the 54 runs in 1 worker in 1.0 min" in third and "on H100" in third
    assert "install step took 2.5 min (building a fresh venv)" in second
    assert readme.session_lines(tmp_path / "nothing") == []


def test_a_generated_markdown_file_is_spliced_without_its_title(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "results" / "trainer" / "lm_step.md"
    summary.parent.mkdir(parents=True)
    summary.write_text("# Title line\n\n| a | b |\n|---|---|\n| 1.25 | 2 |\n")
    name = "results/trainer/lm_step.md"
    path = tmp_path / "README.md"
    path.write_text(f"x\n<!-- results:{name}:start -->\nOLD\n<!-- results:{name}:end -->\ny\n")
    assert readme.main([name, "--check"]) == 1
    assert readme.main([name]) == 0
    text = path.read_text()
    assert "| 1.25 | 2 |" in text and "Title line" not in text and "OLD" not in text
    assert text.startswith("x\n") and text.endswith("\ny\n")
    assert readme.main([name, "--check"]) == 0
    summary.write_text("# Title line\n\n| a | b |\n|---|---|\n| 1.5 | 2 |\n")
    assert readme.main([name, "--check"]) == 1


def test_blocks_are_found_in_the_readme_and_the_docs_pages_and_the_headline_part_is_short(tmp_path, monkeypatch):
    out = _results(tmp_path)
    monkeypatch.chdir(tmp_path)
    name = "results/quick"
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(f"top\n<!-- results:{name}:headline:start -->\nOLD\n"
                                        f"<!-- results:{name}:headline:end -->\n")  # fmt: skip
    (tmp_path / "docs" / "results.md").write_text(f"<!-- results:{name}:start -->\nOLD\n<!-- results:{name}:end -->\n")
    (tmp_path / "docs" / "other.md").write_text("no blocks\n")
    assert readme.main([name, "--check"]) == 1
    assert readme.main([name]) == 0
    short = (tmp_path / "README.md").read_text()
    full = (tmp_path / "docs" / "results.md").read_text()
    assert "OLD" not in short and "OLD" not in full and (tmp_path / "docs" / "other.md").read_text() == "no blocks\n"
    assert "### Headline metric" in short and "81.0" in short and "### Cost per run" not in short
    assert "### Headline metric" in full and "### Cost per run" in full
    assert readme.main([name, "--check"]) == 0
    rec.append_record(out / "runs.jsonl", make_record("sst2", "adapter", 0, 0.5, wall_time_s=30.0))
    tables.write_all(out, plots=False)
    assert readme.main([name, "--check"]) == 1  # both files stale, both named
    assert readme.main([name, "--readme", "docs/results.md"]) == 0
    assert readme.main([name, "--check"]) == 1  # the README's block is still stale


def test_every_generated_block_in_the_docs_is_checked_in_ci():
    """Each results block of README.md and docs/*.md names a folder or file that `.ci/run` checks with
    `bench.readme … --check`, and that exists: no block can go stale unnoticed."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    named = set()
    for page in pages:
        for name in re.findall(r"<!-- results:(.+?):start -->", page.read_text(encoding="utf-8")):
            named.add(re.sub(rf":({readme.OOD_PART}|{readme.HEADLINE_PART})$", "", name))
    checked = set(re.findall(r"^readme (\S+) --check", (root / ".ci" / "run").read_text(), flags=re.M))
    assert named and named == checked, (named - checked, checked - named)
    assert readme.VERDICT in named  # the verdict block, whose target is not a path
    assert all((root / name).exists() for name in named - {readme.VERDICT})
