"""Shared checks of a committed results folder: its records, and that they are the profile's whole matrix (each
row at its own seeds, `[method_seeds]`) from one clean commit and one session that started from an empty cache."""

from __future__ import annotations

import json
from pathlib import Path

from bench import profiles as prof
from bench import records as rec


def folder_records(folder: Path, command: str) -> list[dict]:
    found = rec.load_records(folder)
    assert found, f"no records in {folder}: run {command}"
    return found


def assert_whole_matrix_from_one_clean_commit(records: list[dict], folder: Path, profile: prof.Profile,
                                              rows: tuple[str, ...] | None = None) -> list[dict]:  # fmt: skip
    """``rows``: the profile's methods unless given (e.g. with the α-sweep pseudo-row). Returns the sessions."""
    rows = tuple(profile.methods) if rows is None else rows
    expected = {(t, m, s) for t in profile.tasks for m in rows for s in profile.seeds_of(m)}
    assert {(r["task"], r["method"], r["seed"]) for r in records} == expected
    assert all(r["status"] == "ok" for r in records)
    assert len({r["git_revision"] for r in records}) == 1 and not any(r["git_dirty"] for r in records)
    sessions = [json.loads(line) for line in (folder / "sessions.jsonl").read_text().splitlines() if line.strip()]
    assert sessions[0]["cache_empty_at_start"] and sum(s["runs_executed"] for s in sessions) == len(expected)
    return sessions
