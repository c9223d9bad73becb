"""The learning rates in the CPU profiles are the dev-split sweep's choice (results/lr_sweep), not typed in."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import lr_sweep
from bench import profiles as prof
from bench import records as rec
from hybridft.methods import get_method

SWEEP = Path(__file__).resolve().parents[2] / "results" / "lr_sweep"
FULL_FT = ("plain", "plain_matched", "hybrid", "hybrid_output", "kd_pre", "kd_fine", "hybrid_a0.25", "hybrid_a0.75",
           "plain_random")  # fmt: skip
TEACHER = ("lp_ft", "wise_ft", "hybrid", "hybrid_output", "kd_pre", "kd_fine", "hybrid_a0.25", "hybrid_a0.75")


def test_sweep_records_never_score_on_the_evaluation_split():
    records = rec.load_records(SWEEP)
    assert records, f"no sweep records in {SWEEP}: run python -m bench.lr_sweep"
    assert all(r["config"]["eval_on"] == "dev" and r["subsets"]["eval"]["split"] == "dev" for r in records)
    assert {r["method"] for r in records} == set(lr_sweep.GRID)


@pytest.mark.parametrize("name", ["quick", "ablations", "curves"])
def test_profile_rates_are_the_sweep_choice(name):
    chosen = lr_sweep.chosen_rates(rec.load_records(SWEEP))
    profile = prof.load_profile(name)
    for model in profile.models:
        for task in profile.tasks:
            for method in [*profile.methods, *([profile.sweep_method] if profile.alpha_sweep else [])]:
                run_fields, args = profile.settings(model, task, method)
                base = profile.base_method(method)
                config = get_method(base).make_config(args, run_fields.get("learning_rate"))
                full_ft = lr_sweep.rate_for(chosen, "plain", task)
                if method in FULL_FT or base in ("plain", "plain_matched"):
                    assert config.learning_rate == full_ft, (name, task, method)
                if method in TEACHER:
                    assert config.ft_learning_rate == full_ft, (name, task, method)
                if base in ("adapter", "lora"):
                    assert config.learning_rate == lr_sweep.rate_for(chosen, base, task), (name, task, method)


def test_llm_quick_rates_are_its_own_sweeps_choice():
    sweep = SWEEP.parent / "lr_sweep_llm"
    records = rec.load_records(sweep)
    assert records and all(r["config"]["eval_on"] == "dev" for r in records)
    profile = prof.load_profile("llm-quick")
    _, grid = lr_sweep.sweep_plan(profile)
    assert {r["method"] for r in records} == set(grid)
    chosen = lr_sweep.chosen_rates(records)
    for task in profile.tasks:
        for method in profile.methods:
            run_fields, args = profile.settings(profile.models[0], task, method)
            config = get_method(method).make_config(args, run_fields.get("learning_rate"))
            if method in ("plain", "plain_matched", "hybrid"):
                assert config.learning_rate == chosen["plain"][task], method
            if method == "hybrid":
                assert config.ft_learning_rate == chosen["plain"][task]
            if method == "lora":
                assert config.learning_rate == chosen["lora"][task]
