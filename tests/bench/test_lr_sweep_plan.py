"""bench.lr_sweep's plan: matched baselines over their base grid, one step past an edge, the summary's marks."""

from __future__ import annotations

import numpy as np
import pytest

from bench import lr_sweep
from bench import profiles as prof


def test_step_past_an_edge_follows_the_outer_ratio_and_an_interior_choice_stays():
    assert lr_sweep.step_past((1e-4, 1e-3, 3e-3, 1e-2), 1e-2) == pytest.approx(3e-2)
    assert lr_sweep.step_past((5e-4, 2e-3, 5e-3, 1e-2), 1e-2) == pytest.approx(2e-2)
    assert lr_sweep.step_past((3e-5, 1e-4, 3e-4, 1e-3), 3e-5) == pytest.approx(9e-6)
    assert lr_sweep.step_past((1e-3, 3e-5, 3e-4, 1e-4), 1e-3) == pytest.approx(3e-3)  # order of the grid is free
    assert lr_sweep.step_past((3e-5, 1e-4, 3e-4, 1e-3), 1e-4) is None
    assert lr_sweep.step_past((1e-3,), 1e-3) is None


def test_matched_baselines_sweep_their_base_methods_grid_and_unknown_methods_are_refused():
    quick = prof.load_profile("quick")
    tasks, plan = lr_sweep.sweep_plan(quick, ("plain_matched", "lora_matched"))
    assert tasks == lr_sweep.SWEEP_TASKS
    assert plan["plain_matched"]["stsb"] == tuple(sorted(lr_sweep.GRID["plain"]))
    assert plan["lora_matched"]["conll2003"] == tuple(sorted(lr_sweep.GRID["lora"]))
    assert lr_sweep.sweep_plan(quick, ("lora",), ("conll2003",))[1] == {"lora": {"conll2003": lr_sweep.GRID["lora"]}}
    with pytest.raises(ValueError, match=r"--methods adapter_matched.*expected some of plain, adapter, lora"):
        lr_sweep.sweep_plan(quick, ("adapter_matched",))
    with pytest.raises(ValueError, match=r"unknown task .nosuchtask."):
        lr_sweep.sweep_plan(quick, None, ("nosuchtask",))
    specs = lr_sweep.sweep_specs(quick, None, lr_sweep.sweep_plan(quick, ("plain_matched",), ("sst2",))[1])
    assert [s.config.learning_rate for s in specs] == sorted(lr_sweep.GRID["plain"])
    assert all(s.config.method == "plain_matched" and s.config.eval_on == "dev" for s in specs)
    assert {s.config.dev_size for s in specs} == {quick.run["dev_size"]}


def _record(method, task, lr, correct):
    correct = np.asarray(correct, dtype=float)
    return {"status": "ok", "method": method, "task": task, "seed": 0, "key": f"{method}-{task}-{lr}",
            "config": {"learning_rate": lr, "dev_size": len(correct)}, "metric_name": "accuracy",
            "headline_metric": "accuracy", "headline": float(correct.mean()), "metrics": {"accuracy": correct.mean()},
            "subsets": {"eval": {"split": "dev", "size": len(correct), "fingerprint": "dev0"}},
            "eval_stats": {"kind": "mean", "rows": [[c] for c in correct.tolist()]}, "train_flops": 1e12, "wall_time_s": 60.0,
            "method_extra": {"matched_epochs": 5.33} if method.endswith("_matched") else {}}  # fmt: skip


def test_extension_and_summary_name_the_edge_the_noise_and_the_cost():
    rng = np.random.default_rng(0)
    rates = lr_sweep.GRID["lora"]
    records = [
        _record("lora", "sst2", lr, rng.random(200) < p) for lr, p in zip(rates, (0.5, 0.6, 0.7, 0.9), strict=True)
    ]
    plan = {"lora": {"sst2": rates}}
    extended, added = lr_sweep.extend_plan(plan, records)
    assert added == [("lora", "sst2", pytest.approx(2e-2))] and extended["lora"]["sst2"][-1] == pytest.approx(2e-2)
    text = lr_sweep.summary(records, ("sst2",), plan, "cmd")
    assert "| lora | 0.01 | " in text and "✓ (edge)" in text and "(200 rows)" in text
    chosen, runner_up = records[3], records[2]
    diff = 100 * (np.mean(chosen["eval_stats"]["rows"]) - np.mean(runner_up["eval_stats"]["rows"]))
    assert f"| lora | SST-2 | 0.01 | 0.005 | {diff:+.1f} | [" in text
    assert "4 runs, 4e+12 training FLOPs, 4 min" in text
    records.append(_record("lora", "sst2", 2e-2, rng.random(200) < 0.8))
    text = lr_sweep.summary(records, ("sst2",), extended, "cmd")
    assert "| lora | 0.01 | " in text and "(edge)" not in text.split("## Within")[0].split("| lora | 0.01 |")[1][:30]
