"""Out-of-distribution tables, their statistics (mean over shift sets, variance ratio), the plot and README block,
on synthetic records whose per-example rows are drawn fresh per test."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from bench import plots, readme, shift_tables, stats, table_core, tables
from bench import records as rec
from tests.bench.synthetic import make_record

SETS = {"sst2": ["uci_amazon", "uci_yelp", "mpqa"], "conll2003": ["wnut17", "conllpp"]}
ROLES = {"conllpp": "label_noise"}


def _rows(rng, n: int, p: float) -> list[list[int]]:
    return rng.binomial(1, p, size=(n, 1)).tolist()


def _entry(rows, baseline: float, role: str = "shift", n_rows: int | None = None) -> dict:
    headline = stats.metric_from_stats("mean", rows)
    return {"role": role, "metrics": {"accuracy": headline}, "headline_metric": "accuracy", "headline": headline,
            "majority_baseline": baseline, "failed_to_learn": headline <= baseline,
            "eval_stats": {"kind": "mean", "rows": rows},
            "subset": {"task": "sst2", "split": "shift:x", "size": len(rows), "seed": 0, "fingerprint": "f" * 8}}  # fmt: skip


def _runs(rng, methods=("plain", "plain_matched", "hybrid", "wise_ft"), seeds=(0, 1, 2), n=60) -> list[dict]:
    """sst2 runs with three shift sets (accuracy rows) and per-method skill; a CoNLL task without eval_stats."""
    skill = {m: 0.55 + 0.08 * i for i, m in enumerate(methods)}
    runs = []
    for method in methods:
        for seed in seeds:
            p = min(0.95, skill[method] + rng.normal(0, 0.02))
            rows = _rows(rng, n, p)
            shifts = {name: _entry(_rows(rng, n - 10 * j, p - 0.1), 0.5) for j, name in enumerate(SETS["sst2"])}
            runs.append(make_record("sst2", method, seed, stats.metric_from_stats("mean", rows),
                                    eval_stats={"kind": "mean", "rows": rows}, majority_baseline=0.5,
                                    shift_metrics=shifts, shift_eval_time_s=2.0, wall_time_s=12.0))  # fmt: skip
            conll = {name: {**_entry(_rows(rng, 30, p - 0.2), 0.0, ROLES.get(name, "shift")), "eval_stats": None}
                     for name in SETS["conll2003"]}  # fmt: skip
            runs.append(make_record("conll2003", method, seed, p, shift_metrics=conll, majority_baseline=0.0,
                                    shift_eval_time_s=2.0, wall_time_s=12.0))  # fmt: skip
    return runs


def scipy_t_interval(values):
    from scipy import stats as scipy_stats

    d = np.asarray(values, dtype=np.float64)
    return scipy_stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=scipy_stats.sem(d))


def _md(table) -> list[list[str]]:
    from bench.render import render_markdown

    text = render_markdown([], [table])
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]


def test_shift_view_swaps_the_evaluation_and_mean_view_judges_the_mean(seed):
    rng = np.random.default_rng(seed)
    run = _runs(rng, methods=("plain",), seeds=(0,))[0]
    view = shift_tables.shift_view(run, "uci_yelp")
    entry = run["shift_metrics"]["uci_yelp"]
    assert view["headline"] == entry["headline"] and view["eval_stats"] == entry["eval_stats"]
    assert view["subsets"] == {"eval": entry["subset"]} and "shift_metrics" not in view
    assert view["majority_baseline"] == 0.5 and shift_tables.shift_view(run, "absent") is None
    mean = shift_tables.mean_view(run, SETS["sst2"])
    assert mean["headline"] == pytest.approx(
        statistics.fmean(run["shift_metrics"][n]["headline"] for n in SETS["sst2"])
    )
    assert mean["failed_to_learn"] is (mean["headline"] <= 0.5)
    assert shift_tables.mean_view(run, [*SETS["sst2"], "absent"]) is None
    low = {**run, "shift_metrics": {n: {**e, "headline": 0.4} for n, e in run["shift_metrics"].items()}}
    assert shift_tables.mean_view(low, SETS["sst2"])["failed_to_learn"] is True


def test_ood_table_columns_cells_and_baseline_row(seed):
    rng = np.random.default_rng(seed)
    runs = _runs(rng)
    assert shift_tables.columns(runs) == [("sst2", None), ("sst2", shift_tables.AVG),
                                          *[("sst2", n) for n in SETS["sst2"]],
                                          ("conll2003", None), ("conll2003", "wnut17"), ("conll2003", "conllpp")]  # fmt: skip
    rows = _md(shift_tables.ood_table(runs))
    header, body = rows[0], rows[1:]
    assert header[:4] == ["Model", "Method", "SST-2 ID", "SST-2 OOD avg"] and header[-1] == "CoNLL-2003 conllpp"
    hybrid = next(r for r in body if r[1] == "hybrid")
    yelp = [100 * r["shift_metrics"]["uci_yelp"]["headline"] for r in runs
            if r["method"] == "hybrid" and r["task"] == "sst2"]  # fmt: skip
    text = hybrid[header.index("SST-2 uci_yelp")].strip("*")
    assert text.startswith(f"{statistics.fmean(yelp):.1f} ± {statistics.stdev(yelp):.1f}")
    avg = [100 * statistics.fmean(r["shift_metrics"][n]["headline"] for n in SETS["sst2"]) for r in runs
           if r["method"] == "hybrid" and r["task"] == "sst2"]  # fmt: skip
    assert hybrid[header.index("SST-2 OOD avg")].strip("*").startswith(f"{statistics.fmean(avg):.1f} ±")
    baseline = next(r for r in body if r[1] == "majority baseline")
    assert baseline[header.index("SST-2 mpqa")] == "50.0" and baseline[header.index("CoNLL-2003 wnut17")] == "0.0"
    assert shift_tables.ood_table([make_record("sst2", "plain", 0, 0.8)]) is None


def _reference_mean_difference(method_sets, base_sets, n_boot, seed):
    """The bootstrap of paired_mean_difference written out with loops: one seed draw shared by the sets; per set
    one draw of its examples per resample, shared by every drawn seed (each set's runs share its subset)."""
    seeds = sorted(r["seed"] for r in method_sets[0])
    choice = np.random.default_rng(seed).integers(0, len(seeds), size=(n_boot, len(seeds)))
    total = np.zeros(n_boot)
    for j, (mine, base) in enumerate(zip(method_sets, base_sets, strict=True)):
        by_seed_m = {r["seed"]: np.asarray(r["eval_stats"]["rows"], float)[:, 0] for r in mine}
        by_seed_b = {r["seed"]: np.asarray(r["eval_stats"]["rows"], float)[:, 0] for r in base}
        n = len(by_seed_m[seeds[0]])
        idx = np.random.default_rng([seed, j + 1]).integers(0, n, size=(n_boot, n))
        for b in range(n_boot):
            m = [100 * by_seed_m[seeds[s]][idx[b]].mean() for s in choice[b]]
            t = [100 * by_seed_b[seeds[s]][idx[b]].mean() for s in choice[b]]
            total[b] += (np.mean(m) - np.mean(t)) / len(method_sets)
    return np.percentile(total, [2.5, 97.5])


def test_paired_mean_difference_matches_a_loop_reference(seed):
    rng = np.random.default_rng(seed)
    runs = _runs(rng, methods=("plain", "hybrid"))
    per_set = {n: shift_tables.column_runs(runs, "sst2", n) for n in SETS["sst2"]}
    mine = [[r for r in per_set[n] if r["method"] == "hybrid"] for n in SETS["sst2"]]
    base = [[r for r in per_set[n] if r["method"] == "plain"] for n in SETS["sst2"]]
    d = stats.paired_mean_difference(mine, base, n_boot=300, seed=7)
    point = statistics.fmean(
        statistics.fmean(100 * m["headline"] for m in ms) - statistics.fmean(100 * b["headline"] for b in bs)
        for ms, bs in zip(mine, base, strict=True)
    )
    assert d.diff == pytest.approx(point, abs=1e-9) and d.draw == stats.SHARED and d.n_seeds == 3
    low, high = _reference_mean_difference(mine, base, 300, 7)
    assert (d.boot_low, d.boot_high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    per_seed = [statistics.fmean(100 * (ms[k]["headline"] - bs[k]["headline"]) for ms, bs in zip(mine, base, strict=True))
                for k in range(3)]  # fmt: skip
    t_ref = scipy_t_interval(per_seed)
    assert (d.t_low, d.t_high) == (pytest.approx(t_ref[0], abs=1e-9), pytest.approx(t_ref[1], abs=1e-9))
    same = stats.paired_mean_difference(base, base, n_boot=200)
    assert (same.diff, same.t_low, same.boot_low, same.boot_high, same.excludes_zero) == (0.0, 0.0, 0.0, 0.0, False)
    no_stats = [[{**r, "eval_stats": None} for r in rs] for rs in mine]
    crude = stats.paired_mean_difference(no_stats, base, n_boot=200)
    assert crude.draw == stats.NO_DRAW and "no per-example statistics" in crude.note and crude.t_low == d.t_low
    assert stats.paired_mean_difference([[]], [base[0]]) is None
    with pytest.raises(ValueError, match="same non-zero number of sets"):
        stats.paired_mean_difference(mine, base[:2])


def test_ood_difference_table_agrees_with_the_statistics(seed):
    rng = np.random.default_rng(seed)
    runs = _runs(rng)
    rows = _md(shift_tables.ood_difference_table(runs, n_boot=200))
    header, body = rows[0], rows[1:]
    row = next(r for r in body if r[1] == "plain" and r[2] == "hybrid")
    views = shift_tables.column_runs(runs, "sst2", "mpqa")
    d = stats.paired_difference([r for r in views if r["method"] == "hybrid"],
                                [r for r in views if r["method"] == "plain"], n_boot=200)  # fmt: skip
    assert row[header.index("SST-2 mpqa (exploratory) t-interval")].strip("*") == table_core.t_text(d)
    assert row[header.index("SST-2 mpqa (exploratory) bootstrap (examples)")] == table_core.boot_text(d)
    assert "SST-2 OOD avg t-interval" in header and "SST-2 ID t-interval" in header  # planned: not exploratory
    assert row[header.index("CoNLL-2003 wnut17 (exploratory) bootstrap (examples)")] == "–"  # no eval_stats there
    assert row[header.index("CoNLL-2003 wnut17 (exploratory) t-interval")].strip("*").startswith(("+", "-", "0"))
    assert {r[1] for r in body} == {"plain", "plain_matched"}


def test_variance_ratio_against_closed_form_f_quantiles(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 2, 3).tolist(), rng.normal(0, 1, 3).tolist()
    ratio, low, high = stats.variance_ratio(a, b)
    assert ratio == pytest.approx(np.var(a, ddof=1) / np.var(b, ddof=1))
    # F(2, 2) has CDF x / (1 + x): its 0.975 quantile is 39 and its 0.025 quantile 1/39
    assert (low, high) == (pytest.approx(ratio / 39), pytest.approx(ratio * 39))
    two = stats.variance_ratio(a[:2], b[:2])
    q = math.tan(0.975 * math.pi / 2) ** 2  # F(1, 1): CDF (2/π)·arctan(√x)
    assert (two[1], two[2]) == (pytest.approx(two[0] / q), pytest.approx(two[0] * q))
    assert stats.variance_ratio([1.0], b) is None and stats.variance_ratio(a, [2.0, 2.0]) is None


def test_stability_table_std_worst_and_ratio(seed):
    rng = np.random.default_rng(seed)
    runs = _runs(rng)
    rows = _md(shift_tables.stability_table(runs))
    header, body = rows[0], rows[1:]
    scores = {m: [100 * r["headline"] for r in runs if r["method"] == m and r["task"] == "sst2"]
              for m in ("plain", "hybrid")}  # fmt: skip
    hybrid = next(r for r in body if r[1] == "hybrid")
    assert hybrid[header.index("SST-2 ID std")] == f"{statistics.stdev(scores['hybrid']):.1f}"
    assert hybrid[header.index("SST-2 ID worst")].startswith(f"{min(scores['hybrid']):.1f}")
    ratio, low, high = stats.variance_ratio(scores["hybrid"], scores["plain"])
    assert hybrid[header.index("SST-2 ID var ÷ plain")] == f"{ratio:.2g} [{low:.2g}, {high:.2g}]"
    assert next(r for r in body if r[1] == "plain")[header.index("SST-2 ID var ÷ plain")] == "1 (baseline)"
    assert "SST-2 OOD avg std" in header
    assert shift_tables.stability_table([make_record("sst2", "plain", 0, 0.8)]) is None


def test_tables_and_plot_include_ood_only_with_shift_metrics(tmp_path, seed):
    rng = np.random.default_rng(seed)
    runs = _runs(rng, methods=("plain", "hybrid", "wise_ft"))
    sweeps = []
    for s in (0, 1):
        curve = [{"alpha": a, "headline": 0.6 + 0.1 * a,
                  "shift": {n: {"headline": 0.5 + 0.2 * a} for n in SETS["sst2"]}} for a in (0.0, 0.5, 1.0)]  # fmt: skip
        sweeps.append(make_record("sst2", "alpha_sweep", s, 0.7, kind="alpha_sweep", curve=curve))
    for a in (0.25, 0.75):
        runs.append({**make_record("sst2", f"hybrid_a{a}", 0, 0.7, shift_metrics=runs[0]["shift_metrics"]),
                     "config": {"method": "hybrid", "method_args": [["alpha", a]]}})  # fmt: skip
    for r in [*runs, *sweeps]:
        rec.append_record(tmp_path / "runs.jsonl", r)
    tables.write_all(tmp_path)
    text = (tmp_path / "table.md").read_text()
    assert "### Out of distribution: headline" in text and "### Stability over seeds" in text
    assert (tmp_path / "effective_robustness.png").stat().st_size > 0
    curves = plots._alpha_curves(runs, sweeps, "minilm", "sst2", SETS["sst2"])
    assert [a for a, _, _ in curves["WiSE-FT α sweep"]] == [0.0, 0.5, 1.0]
    assert curves["WiSE-FT α sweep"][1][1:] == (pytest.approx(65.0), pytest.approx(60.0))
    assert [a for a, _, _ in curves["hybrid α grid"]] == [0.25, 0.5, 0.75]  # plain "hybrid" is α 0.5
    plain_only = tmp_path / "plain"
    plain_only.mkdir()
    rec.append_record(plain_only / "runs.jsonl", make_record("sst2", "plain", 0, 0.8))
    tables.write_all(plain_only)
    assert "Out of distribution" not in (plain_only / "table.md").read_text()
    assert not (plain_only / "effective_robustness.png").exists()


def test_readme_ood_block_and_shift_cost(tmp_path, monkeypatch, seed):
    rng = np.random.default_rng(seed)
    out = tmp_path / "results" / "quick"
    out.mkdir(parents=True)
    for r in _runs(rng, methods=("plain", "hybrid")):
        rec.append_record(out / "runs.jsonl", r)
    tables.write_all(out, plots=False)
    monkeypatch.chdir(tmp_path)
    name = "results/quick"
    (tmp_path / "README.md").write_text(
        f"<!-- results:{name}:start -->\nx\n<!-- results:{name}:end -->\nmid\n"
        f"<!-- results:{name}:ood:start -->\nSTALE\n<!-- results:{name}:ood:end -->\n"
    )
    assert readme.main([name, "--check"]) == 1
    assert readme.main([name]) == 0
    text = (tmp_path / "README.md").read_text()
    ood = text.split(f"<!-- results:{name}:ood:start -->", 1)[1]
    assert "STALE" not in ood and "### Out of distribution: headline" in ood and "### Stability over seeds" in ood
    # 12 runs: 2.0 s of shift evaluation each in 12.0 s of wall time → 24 s of 144 s, 20 % on top of 120 s
    assert "0.4 min of the 2.4 min that the 12 runs took, 20.0 % on top of the 2.0 min" in ood
    main_block = text.split("mid")[0]
    assert "### Out of distribution" not in main_block and "### Headline metric" in main_block
    assert readme.main([name, "--check"]) == 0


def test_mean_interval_matches_a_loop_reference_and_the_summary_table(seed):
    rng = np.random.default_rng(seed)
    runs = _runs(rng, methods=("plain", "hybrid"))
    mine = [r for r in runs if r["method"] == "hybrid" and r["task"] == "sst2"]
    mean, low, high, n, method = stats.mean_interval([mine], n_boot=300, seed=5)
    # the ID runs record no evaluation fingerprint: each seed's examples are drawn on their own
    assert mean == pytest.approx(statistics.fmean(100 * r["headline"] for r in mine)) and (n, method) == (3,
                                                                                                          stats.PER_SEED)  # fmt: skip
    gen = np.random.default_rng(5)  # one set: seeds and examples from the same generator, as the bootstrap draws them
    choice = gen.integers(0, 3, size=(300, 3))
    values = np.zeros((300, 3))
    rows = [np.asarray(r["eval_stats"]["rows"], float)[:, 0] for r in sorted(mine, key=lambda r: r["seed"])]
    for slot in range(3):
        for s in range(3):
            where = np.flatnonzero(choice[:, slot] == s)
            idx = gen.integers(0, len(rows[s]), size=(len(where), len(rows[s])))
            values[where, slot] = 100 * rows[s][idx].mean(axis=1)
    ref_low, ref_high = np.percentile(values.mean(axis=1), [2.5, 97.5])
    assert (low, high) == (pytest.approx(ref_low, abs=1e-9), pytest.approx(ref_high, abs=1e-9))
    per_set = [[shift_tables.shift_view(r, n) for r in mine] for n in SETS["sst2"]]
    ood = stats.mean_interval(per_set, n_boot=300, seed=5)
    assert ood[0] == pytest.approx(statistics.fmean(100 * statistics.fmean(r["shift_metrics"][n]["headline"]
                                   for n in SETS["sst2"]) for r in mine))  # fmt: skip
    assert ood[1] < ood[0] < ood[2]
    assert stats.mean_interval([[]]) is None
    rows_md = _md(shift_tables.ood_summary_table(runs, n_boot=300, seed=5))
    header, body = rows_md[0], rows_md[1:]
    hybrid = next(r for r in body if r[1] == "hybrid")
    assert hybrid[header.index("SST-2 ID")] == f"{mean:.1f} [{low:.1f}, {high:.1f}] (per seed)"
    assert "[" not in hybrid[header.index("CoNLL-2003 OOD")]  # wnut17 only (conllpp is label noise): no eval_stats
