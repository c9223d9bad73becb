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
