"""The committed causal-LM results (results/llm-quick) are what their profile says: 5 seeds for hybrid and
plain_matched, 3 for zero_shot, plain and LoRA, from one clean commit and an empty stage cache; plain_matched sized
by the one LM-head rule (the head counted on the loss rows) at the rate its own sweep chose, within a step of the
hybrid pipeline's FLOPs; every run (zero-shot included) beat its majority baseline."""

from __future__ import annotations

from pathlib import Path
from statistics import median

import pytest

from bench import profiles as prof
from bench import stats
from tests.bench._results_matrix import assert_whole_matrix_from_one_clean_commit, folder_records

LLM_QUICK = Path(__file__).resolve().parents[2] / "results" / "llm-quick"


@pytest.fixture(scope="module")
def records():
    return folder_records(LLM_QUICK, "nox -s bench -- --profile llm-quick --output results/llm-quick")


def test_the_matrix_has_each_rows_seeds_from_one_clean_commit(records):
    profile = prof.load_profile("llm-quick")
    assert profile.seeds_of("hybrid") == profile.seeds_of("plain_matched") == (0, 1, 2, 3, 4)
    assert all(len(profile.seeds_of(m)) >= 3 for m in profile.methods)
    assert_whole_matrix_from_one_clean_commit(records, LLM_QUICK, profile)


def test_plain_matched_follows_the_one_head_rule_and_matches_hybrid(records):
    """Every plain_matched run was sized with the LM head counted on its loss rows, as the hybrid student's is, and
    lands within 5 % of the hybrid pipeline's FLOPs at its seed (the step granularity of 20-step epochs)."""
    hybrid = {r["seed"]: r["train_flops"] for r in records if r["method"] == "hybrid"}
    ratios = []
    for r in (r for r in records if r["method"] == "plain_matched"):
        assert r["method_extra"]["lm_head_flops"] == "loss_rows", stats.run_name(r)
        assert r["method_extra"]["matched_epochs"] > r["config"]["epochs"], stats.run_name(r)
        ratios.append(r["train_flops"] / hybrid[r["seed"]])
    assert len(ratios) == 5 and all(0.95 <= x <= 1.05 for x in ratios), ratios
    assert 0.98 <= median(ratios) <= 1.02, ratios


def test_every_run_beat_its_majority_baseline(records):
    for r in records:
        assert not stats.failed_to_learn(r), stats.run_name(r)
        assert r["majority_baseline"] is not None and stats.headline_percent(r) > 100 * r["majority_baseline"]
