"""The committed semi-supervised results (results/semi) are what their profile says: 5 seeds for hybrid and
plain_matched (plain_matched at the rate its own sweep chose), 3 for plain and hybrid_labelled, from one clean
commit, with both teachers learned in every hybrid run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import profiles as prof
from bench import stats
from tests.bench._results_matrix import assert_whole_matrix_from_one_clean_commit, folder_records

SEMI = Path(__file__).resolve().parents[2] / "results" / "semi"


@pytest.fixture(scope="module")
def records():
    return folder_records(SEMI, "nox -s bench -- --profile semi")


def test_the_matrix_has_each_rows_seeds_from_one_clean_commit(records):
    profile = prof.load_profile("semi")
    assert profile.seeds_of("hybrid") == profile.seeds_of("plain_matched") == (0, 1, 2, 3, 4)
    assert len(profile.seeds_of("plain")) >= 3 and len(profile.seeds_of("hybrid_labelled")) >= 3
    assert_whole_matrix_from_one_clean_commit(records, SEMI, profile)


def test_every_hybrid_teacher_learned_and_the_unlabelled_inputs_were_used(records):
    for r in (r for r in records if r["method"] in ("hybrid", "hybrid_labelled")):
        for name in ("pre", "fine"):
            scores = r["teacher_scores"][name]
            assert scores["dev"] > scores["majority"], (stats.run_name(r), name, scores)
        assert r["weak_teacher"] is False and r["probe"]["converged"], stats.run_name(r)
    for r in (r for r in records if r["method"] in ("hybrid", "plain_matched")):
        assert r["config"]["method_args"] and dict(r["config"]["method_args"])["unlabeled_size"] == 3000
    assert not any(stats.failed_to_learn(r) for r in records if r["method"] != "plain")
