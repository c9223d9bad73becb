"""The committed headline (results/quick) is what its profile and the README say it is: every run of the profile's
matrix at 5 seeds from one clean commit, every stage of every pipeline learned (or is flagged), and plain reaches the
floors the profile is sized for."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import profiles as prof
from bench import stats
from tests.bench._results_matrix import assert_whole_matrix_from_one_clean_commit, folder_records

QUICK = Path(__file__).resolve().parents[2] / "results" / "quick"
PLAIN_FLOORS = {"sst2": 78.0, "stsb": 60.0, "conll2003": 55.0}  # headline %, the mean over seeds


@pytest.fixture(scope="module")
def records():
    return folder_records(QUICK, "nox -s bench")


def test_the_matrix_is_complete_at_five_seeds_from_one_clean_commit(records):
    profile = prof.load_profile("quick")
    assert profile.seeds == (0, 1, 2, 3, 4) and not profile.method_seeds
    sessions = assert_whole_matrix_from_one_clean_commit(records, QUICK, profile)
    assert {s["git_revision"] for s in sessions} == {records[0]["git_revision"]}
    assert {r["hardware"]["torch_threads"] for r in records} == {sessions[0]["threads_per_worker"]}


def test_records_carry_the_fields_the_tables_and_flags_read(records):
    """A token tagger's collapse is not judged (``collapsed`` None: predicting "O" everywhere scores entity F1 0,
    which ``failed_to_learn`` catches); the sentence classifier and the regression are judged."""
    for r in records:
        for field in ("train_flops", "majority_baseline", "failed_to_learn", "eval_stats", "shift_metrics"):
            assert r.get(field) is not None, (stats.run_name(r), field)
        assert "collapsed" in r, stats.run_name(r)
        if r["task"] in ("sst2", "stsb"):
            assert isinstance(r["collapsed"], bool), stats.run_name(r)
        if r["task"] == "sst2":
            assert r["prediction_share"]["share"] > 0, stats.run_name(r)
        if r["method"] in ("hybrid", "wise_ft"):
            assert r["teacher_scores"]["pre"] and r["teacher_scores"]["fine"], stats.run_name(r)


def test_every_teacher_learned_on_dev(records):
    """θ_pre (the converged linear probe) and θ_fine beat their trivial baseline on the dev split in every run that
    builds them: the hybrid and WiSE-FT rows test the method, not a constant teacher."""
    for r in (r for r in records if r["method"] in ("hybrid", "wise_ft")):
        for name in ("pre", "fine"):
            scores = r["teacher_scores"][name]
            assert scores["dev"] > scores["majority"], (stats.run_name(r), name, scores)


def test_plain_reaches_the_floors(records):
    for task, floor in PLAIN_FLOORS.items():
        scores = [stats.headline_percent(r) for r in records if r["task"] == task and r["method"] == "plain"]
        assert len(scores) == 5 and sum(scores) / 5 >= floor, (task, scores)
