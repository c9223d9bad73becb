"""The committed ablations (results/ablations) are what their profile says: every run of the matrix at 3 seeds from
one clean commit, every record scored on every registered shift set of its task (α-sweep points included, so the
effective-robustness plot draws the α curves), and every teacher stage learned."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import profiles as prof
from bench import stats
from bench.shift import default_specs
from tests.bench._results_matrix import assert_whole_matrix_from_one_clean_commit, folder_records

ABLATIONS = Path(__file__).resolve().parents[2] / "results" / "ablations"
MIN_SHIFT_ROWS = 300  # each shift set's scored subset
TEACHER_ROWS = ("hybrid", "hybrid_a0.25", "hybrid_a0.75", "kd_pre", "kd_fine", "hybrid_output")


@pytest.fixture(scope="module")
def records():
    return folder_records(ABLATIONS, "nox -s bench -- --profile ablations")


def test_the_matrix_is_complete_at_three_seeds_from_one_clean_commit(records):
    profile = prof.load_profile("ablations")
    assert len(profile.seeds) == 3 and not profile.method_seeds
    assert_whole_matrix_from_one_clean_commit(records, ABLATIONS, profile, (*profile.methods, prof.ALPHA_SWEEP))


def test_every_record_and_every_alpha_point_is_scored_on_every_shift_set(records):
    for r in records:
        sets = set(default_specs(r["task"]))
        assert sets, r["task"]
        if r["kind"] == prof.ALPHA_SWEEP:
            points = r["curve"]
            assert [p["alpha"] for p in points] == list(prof.load_profile("ablations").alphas)
            for point in points:
                assert set(point["shift"]) == sets, (stats.run_name(r), point["alpha"])
                assert all(isinstance(v["headline"], float) for v in point["shift"].values())
            continue
        assert set(r["shift_metrics"]) == sets and not r["shift_skipped"], stats.run_name(r)
        for name, entry in r["shift_metrics"].items():
            assert entry["subset"]["size"] >= MIN_SHIFT_ROWS, (stats.run_name(r), name, entry["subset"])
            assert isinstance(entry["headline"], float), (stats.run_name(r), name)


def test_every_teacher_learned_and_no_row_is_a_constant_predictor(records):
    """θ_pre (the converged probe) and θ_fine beat their majority baseline on dev in every run that builds both; every
    run beats its trivial baseline on the evaluation subset (none failed to learn)."""
    for r in records:
        if r["kind"] == prof.ALPHA_SWEEP:
            continue
        if r["method"] in TEACHER_ROWS:
            for name in ("pre", "fine"):
                scores = r["teacher_scores"][name]
                assert scores["dev"] > scores["majority"], (stats.run_name(r), name, scores)
            assert r["weak_teacher"] is False and r["probe"]["converged"], stats.run_name(r)
        assert not stats.failed_to_learn(r), stats.run_name(r)


def test_the_effective_robustness_plot_is_drawn():
    assert (ABLATIONS / "effective_robustness.png").stat().st_size > 10_000
