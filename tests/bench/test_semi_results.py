"""The committed semi-supervised results (results/semi) are what their profile says: 5 seeds for hybrid and
plain_matched (plain_matched at the rate its own sweep chose), 3 for plain and hybrid_labelled, from one clean
commit, with both teachers learned in every hybrid run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import profiles as prof
from bench import records as rec
from bench import stats

SEMI = Path(__file__).resolve().parents[2] / "results" / "semi"


@pytest.fixture(scope="module")
def records():
    found = rec.load_records(SEMI)
    assert found, f"no records in {SEMI}: run nox -s bench -- --profile semi"
    return found


def test_the_matrix_has_each_rows_seeds_from_one_clean_commit(records):
    profile = prof.load_profile("semi")
    assert profile.seeds_of("hybrid") == profile.seeds_of("plain_matched") == (0, 1, 2, 3, 4)
    assert len(profile.seeds_of("plain")) >= 3 and len(profile.seeds_of("hybrid_labelled")) >= 3
    expected = {(t, m, s) for t in profile.tasks for m in profile.methods for s in profile.seeds_of(m)}
    assert {(r["task"], r["method"], r["seed"]) for r in records} == expected
    assert all(r["status"] == "ok" for r in records)
    assert len({r["git_revision"] for r in records}) == 1 and not any(r["git_dirty"] for r in records)
    sessions = [json.loads(line) for line in (SEMI / "sessions.jsonl").read_text().splitlines() if line.strip()]
    assert sessions[0]["cache_empty_at_start"] and sum(s["runs_executed"] for s in sessions) == len(expected)


def test_every_hybrid_teacher_learned_and_the_unlabelled_inputs_were_used(records):
    for r in (r for r in records if r["method"] in ("hybrid", "hybrid_labelled")):
        for name in ("pre", "fine"):
            scores = r["teacher_scores"][name]
            assert scores["dev"] > scores["majority"], (stats.run_name(r), name, scores)
        assert r["weak_teacher"] is False and r["probe"]["converged"], stats.run_name(r)
    for r in (r for r in records if r["method"] in ("hybrid", "plain_matched")):
        assert r["config"]["method_args"] and dict(r["config"]["method_args"])["unlabeled_size"] == 3000
    assert not any(stats.failed_to_learn(r) for r in records if r["method"] != "plain")
