"""bench.plots: the Pareto front by hand, the stage a loss curve is drawn from, every plot written reproducibly."""

from __future__ import annotations

import pytest

from bench import plots
from bench import records as rec
from tests.bench.synthetic import make_record

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"


def test_pareto_front_by_hand():
    # (compute, score): 1 is beaten by 0 (less compute, higher score); 3 by 2 (same compute, higher score)
    points = [(1.0, 70.0), (2.0, 65.0), (3.0, 80.0), (3.0, 75.0), (10.0, 85.0), (0.5, 60.0)]
    assert plots.pareto_front(points) == [5, 0, 2, 4]
    assert plots.pareto_front([(1.0, 50.0), (1.0, 50.0)]) == [0, 1]  # equal points: neither dominates
    assert plots.pareto_front([]) == []


def test_last_stage_follows_the_stage_list_then_the_method_name():
    curves = {"hybrid": [[1, 0.5]], "lp": [[1, 0.9]], "lp_ft": [[1, 0.7]]}  # runs.jsonl sorts these keys
    stages = [{"stage": "lp"}, {"stage": "lp_ft"}, {"stage": "teacher_logits"}, {"stage": "hybrid"}]
    assert plots.last_stage({"method": "hybrid", "curves": curves, "stages": stages}) == "hybrid"
    assert plots.last_stage({"method": "hybrid", "curves": curves}) == "hybrid"
    assert plots.last_stage({"method": "wise_ft", "curves": {"lp": [[1, 1.0]], "lp_ft": [[1, 0.5]]}}) == "lp_ft"
    assert plots.last_stage({"method": "plain", "curves": {}}) is None
    assert plots.last_stage({"method": "plain"}) is None


def _records() -> list[dict]:
    out = []
    for task in ("rte", "cola"):
        for seed in (0, 1):
            for method, flops, head in (("plain", 1e14, 0.60), ("plain_matched", 3e14, 0.62), ("hybrid", 3e14, 0.66),
                                        ("lora", 8e13, 0.55)):  # fmt: skip
                curves = {method: [[s, 1.0 / s + seed / 10] for s in range(1, 20)]}
                if method == "hybrid":
                    curves |= {"lp": [[1, 2.0], [2, 1.5]], "lp_ft": [[1, 1.2], [2, 0.9]]}
                out.append(make_record(task, method, seed, head + seed / 100, train_flops=flops, curves=curves))
    return out


def test_every_plot_is_written_and_reproducible(tmp_path):
    records = _records()
    for r in records:
        rec.append_record(tmp_path / "runs.jsonl", r)
    loaded = rec.load_records(tmp_path)
    written = plots.write_plots(loaded, tmp_path)
    names = ["params_vs_score.png", "score_vs_flops.png", "loss_curves.png"]
    assert [p.name for p in written] == names  # no α sweep in these records
    first = {n: (tmp_path / n).read_bytes() for n in names}
    assert all(b[:8] == PNG for b in first.values())
    again = tmp_path / "again"
    again.mkdir()
    plots.write_plots(list(reversed(loaded)), again)
    assert {n: (again / n).read_bytes() for n in names} == first


def test_plots_without_compute_or_curves_are_skipped(tmp_path):
    old = [make_record("rte", m, 0, 0.6) for m in ("plain", "lora")]
    assert plots.score_vs_flops(old, tmp_path / "a.png") is None
    assert plots.loss_curves(old, tmp_path / "b.png") is None
    assert [p.name for p in plots.write_plots(old, tmp_path)] == ["params_vs_score.png"]
