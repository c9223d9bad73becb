"""The learning rates in the CPU profiles are the dev-split sweeps' choice, not typed in: results/lr_sweep (2 epochs),
results/lr_sweep_edges (adapter and LoRA re-swept one step past the edge their CoNLL choice sat at; it replaces
results/lr_sweep's choice for the methods and tasks it swept), and the sweeps of plain_matched at its own epoch count
in the profiles rerun since: results/lr_sweep_matched (quick), results/lr_sweep_semi_matched (semi, whose
plain_matched is sized after hybrid with 3,000 unlabelled inputs), results/lr_sweep_llm_matched (llm-quick) and
results/lr_sweep_variants_matched (variants: plain_matched and lora_matched)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import lr_sweep
from bench import profiles as prof
from bench import records as rec
from bench.methods import get_method

SWEEP = Path(__file__).resolve().parents[2] / "results" / "lr_sweep"
EDGES = SWEEP.parent / "lr_sweep_edges"
MATCHED = SWEEP.parent / "lr_sweep_matched"
SEMI_MATCHED = SWEEP.parent / "lr_sweep_semi_matched"
LLM_MATCHED = SWEEP.parent / "lr_sweep_llm_matched"
VARIANTS_MATCHED = SWEEP.parent / "lr_sweep_variants_matched"
TUNED_AT_OWN_LENGTH = {"quick": MATCHED, "semi": SEMI_MATCHED}  # profile → the sweep its plain_matched rate comes from


def _chosen() -> dict[str, dict[str, float]]:
    chosen = lr_sweep.chosen_rates(rec.load_records(SWEEP))
    for method, by_task in lr_sweep.chosen_rates(rec.load_records(EDGES)).items():
        chosen[method] = {**chosen[method], **by_task}
    return chosen


FULL_FT = ("plain", "plain_matched", "hybrid", "hybrid_output", "kd_pre", "kd_fine", "hybrid_a0.25", "hybrid_a0.75",
           "plain_random", "hybrid_labelled")  # fmt: skip
TEACHER = ("lp_ft", "wise_ft", "hybrid", "hybrid_output", "kd_pre", "kd_fine", "hybrid_a0.25", "hybrid_a0.75",
           "hybrid_labelled")  # fmt: skip


def test_sweep_records_never_score_on_the_evaluation_split():
    records = rec.load_records(SWEEP)
    assert records, f"no sweep records in {SWEEP}: run python -m bench.lr_sweep"
    assert all(r["config"]["eval_on"] == "dev" and r["subsets"]["eval"]["split"] == "dev" for r in records)
    assert {r["method"] for r in records} == set(lr_sweep.GRID)


@pytest.mark.parametrize(("folder", "profile"), [(EDGES, "quick"), (MATCHED, "quick"), (SEMI_MATCHED, "semi"),
                                                 (LLM_MATCHED, "llm-quick"), (VARIANTS_MATCHED, "variants")])  # fmt: skip
def test_later_sweeps_score_on_dev_at_the_profile_size_and_leave_no_choice_at_an_edge(folder, profile):
    records = rec.load_records(folder)
    assert records and all(r["status"] == "ok" for r in records), f"run the sweep that writes {folder}"
    dev_size = prof.load_profile(profile).run["dev_size"]
    settings = prof.load_profile(profile).settings
    assert all(r["config"]["train_size"] == settings(r["model"], r["task"], r["method"])[0]["train_size"]
               for r in records)  # fmt: skip
    assert all(r["config"]["eval_on"] == "dev" and r["subsets"]["eval"]["size"] == dev_size for r in records)
    rates: dict[tuple[str, str], list[float]] = {}
    for r in records:
        rates.setdefault((r["method"], r["task"]), []).append(r["config"]["learning_rate"])
    for method, by_task in lr_sweep.chosen_rates(records).items():
        for task, pick in by_task.items():
            grid = sorted(rates[(method, task)])
            if pick == grid[-1]:  # at the top edge only as the step --extend added past the base grid's edge
                assert lr_sweep.step_past(tuple(grid[:-1]), grid[-2]) == pick, (folder.name, method, task, pick)
            if pick == grid[0]:
                assert lr_sweep.step_past(tuple(grid[1:]), grid[1]) == pick, (folder.name, method, task, pick)
    if folder in (MATCHED, SEMI_MATCHED, LLM_MATCHED, VARIANTS_MATCHED):
        assert {r["method"] for r in records} == ({"plain_matched", "lora_matched"} if folder == VARIANTS_MATCHED
                                                  else {"plain_matched"})  # fmt: skip
        assert all(r["method_extra"]["matched_epochs"] > r["config"]["epochs"] for r in records)


@pytest.mark.parametrize("name", ["quick", "ablations", "curves", "semi"])
def test_profile_rates_are_the_sweep_choice(name):
    chosen = _chosen()
    folder = TUNED_AT_OWN_LENGTH.get(name)
    matched = lr_sweep.chosen_rates(rec.load_records(folder))["plain_matched"] if folder else {}
    profile = prof.load_profile(name)
    for model in profile.models:
        for task in profile.tasks:
            for method in [*profile.methods, *([profile.sweep_method] if profile.alpha_sweep else [])]:
                run_fields, args = profile.settings(model, task, method)
                base = profile.base_method(method)
                config = get_method(base).make_config(args, run_fields.get("learning_rate"))
                full_ft = lr_sweep.rate_for(chosen, "plain", task)
                if base == "plain_matched" and name in TUNED_AT_OWN_LENGTH:
                    assert config.learning_rate == matched[task], (name, task, method)
                elif method in FULL_FT or base in ("plain", "plain_matched"):
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
    matched = lr_sweep.chosen_rates(rec.load_records(LLM_MATCHED))["plain_matched"]  # at its own length
    for task in profile.tasks:
        for method in profile.methods:
            run_fields, args = profile.settings(profile.models[0], task, method)
            config = get_method(method).make_config(args, run_fields.get("learning_rate"))
            if method == "plain_matched":
                assert config.learning_rate == matched[task]
            if method in ("plain", "hybrid"):
                assert config.learning_rate == chosen["plain"][task], method
            if method == "hybrid":
                assert config.ft_learning_rate == chosen["plain"][task]
            if method == "lora":
                assert config.learning_rate == chosen["lora"][task]


def test_variants_matched_rates_are_their_own_sweeps_choice():
    """variants: plain_matched and lora_matched at the rates chosen at their own length; every other row of the two
    families at the family's rate (the quick profile's choice, not re-swept at 500 examples)."""
    matched = lr_sweep.chosen_rates(rec.load_records(VARIANTS_MATCHED))
    profile = prof.load_profile("variants")
    for task in profile.tasks:
        rates = {}
        for method in profile.methods:
            run_fields, args = profile.settings(profile.models[0], task, method)
            rates[method] = get_method(profile.base_method(method)).make_config(args, run_fields.get("learning_rate"))
        assert rates["plain_matched"].learning_rate == matched["plain_matched"][task]
        assert rates["lora_matched"].learning_rate == matched["lora_matched"][task]
        assert (
            rates["lora"].learning_rate == rates["hybrid_lora"].learning_rate == rates["hybrid_lora"].ft_learning_rate
        )
        assert rates["plain"].learning_rate == rates["hybrid"].learning_rate == rates["hybrid"].ft_learning_rate
