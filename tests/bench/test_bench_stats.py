"""bench.stats and the tables built on it: hand-checkable metrics from eval_stats, the paired bootstrap, k/n of runs
that failed to learn, the compute columns, reference rows out of the main table, byte-identical renders."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from bench import stats, table_core, tables
from tests.bench.synthetic import make_record

scipy_stats = pytest.importorskip("scipy.stats")
metrics = pytest.importorskip("sklearn.metrics")


def _md_rows(text: str, title: str) -> list[list[str]]:
    block = text.split(f"### {title}", 1)[1].split("\n### ", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if line.startswith("| ")]


# ------------------------------------------------------------------------------------------------ metrics from stats
def test_summary_by_hand():
    s = stats.summary([1.0, 2.0, 4.0])
    assert (s.n, s.mean, s.median) == (3, 7 / 3, 2.0)
    assert s.std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert stats.summary([5.0]) == stats.Summary(1, 5.0, None, 5.0)
    assert stats.summary([]) == stats.Summary(0, None, None, None)
    assert stats.summary([1.0, 3.0]).median == 2.0


def test_mean_and_counts_by_hand():
    assert stats.metric_from_stats("mean", [[1], [0], [1], [1]]) == 0.75
    assert stats.metric_from_stats("mean", [[100.0], [50.0], [0.0]]) == 50.0  # SQuAD per-question F1
    # f1: Σtp = 3, Σfp = 1, Σfn = 2 → 6 / 9
    assert stats.metric_from_stats("f1_counts", [[1, 0, 0], [2, 1, 1], [0, 0, 1]]) == pytest.approx(6 / 9)
    assert stats.metric_from_stats("f1_counts", [[0, 0, 0], [0, 0, 0]]) == 0.0
    # mcc of tp=2, fp=1, fn=1, tn=4: (8 - 1) / sqrt(3·3·5·5)
    rows = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 2]]
    assert stats.metric_from_stats("mcc_counts", rows) == pytest.approx(7 / 15)
    assert stats.metric_from_stats("mcc_counts", [[0, 0, 0, 1], [0, 0, 0, 1]]) == 0.0  # undefined → 0


def test_every_kind_against_sklearn_and_scipy():
    rng = np.random.default_rng(3)
    y_true, y_pred = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    y_pred[:120] = y_true[:120]
    acc = [[float(a == b)] for a, b in zip(y_true, y_pred, strict=True)]
    assert stats.metric_from_stats("mean", acc) == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    tp = (y_true == 1) & (y_pred == 1)
    fp = (y_true == 0) & (y_pred == 1)
    fn = (y_true == 1) & (y_pred == 0)
    tn = (y_true == 0) & (y_pred == 0)
    counts = np.stack([tp, fp, fn, tn], axis=1).astype(int)
    assert stats.metric_from_stats("f1_counts", counts[:, :3]) == pytest.approx(metrics.f1_score(y_true, y_pred))
    mcc = metrics.matthews_corrcoef(y_true, y_pred)
    assert stats.metric_from_stats("mcc_counts", counts) == pytest.approx(mcc)
    label = rng.normal(size=150)
    pred = np.round(label + rng.normal(scale=0.7, size=150), 1)  # rounding makes ties
    rows = np.stack([pred, np.round(label, 1)], axis=1)
    assert stats.metric_from_stats("pearson", rows) == pytest.approx(scipy_stats.pearsonr(rows[:, 0], rows[:, 1])[0])
    rho = scipy_stats.spearmanr(rows[:, 0], rows[:, 1])[0]
    assert stats.metric_from_stats("spearman", rows) == pytest.approx(rho)
    assert stats.metric_from_stats("pearson", [[1.0, 0.3], [1.0, 0.5], [1.0, 0.1]]) == 0.0  # constant side
    assert stats.metric_from_stats("spearman", [[0.2, 3.0], [0.5, 3.0]]) == 0.0
    with pytest.raises(ValueError, match="unknown eval_stats kind"):
        stats.metric_from_stats("auc", [[1]])


@pytest.mark.parametrize("kind", stats.KINDS)
def test_bootstrap_version_equals_the_metric_of_each_resample(kind):
    rng = np.random.default_rng(7)
    n = 40
    rows = {
        "mean": rng.integers(0, 2, (n, 1)),
        "f1_counts": rng.integers(0, 3, (n, 3)),
        "mcc_counts": np.eye(4, dtype=int)[rng.integers(0, 4, n)],
        "pearson": np.round(rng.normal(size=(n, 2)), 1),
        "spearman": rng.integers(0, 5, (n, 2)).astype(float),  # heavy ties
    }[kind]
    idx = rng.integers(0, n, (25, n))
    boot = stats.metric_from_stats_boot(kind, rows, idx)
    one_by_one = [stats.metric_from_stats(kind, rows[i]) for i in idx]
    assert boot.shape == (25,)
    np.testing.assert_allclose(boot, one_by_one, atol=1e-12)
    if kind == "spearman":
        np.testing.assert_allclose(boot, [scipy_stats.spearmanr(rows[i, 0], rows[i, 1])[0] for i in idx], atol=1e-12)


# ------------------------------------------------------------------------------------------------------- records
def _rec(task, method, seed, correct, *, status="ok", majority=0.5, fingerprint="shared", **extra):
    """A record whose headline is the accuracy of its 0/1 per-example ``correct`` list (eval_stats "mean"), scored
    on the evaluation subset named ``fingerprint`` (None: not recorded)."""
    headline = statistics.fmean(correct) if status != "failed" else None
    fields = {"majority_baseline": majority, "eval_stats": {"kind": "mean", "rows": [[c] for c in correct]}}
    record = make_record(task, method, seed, headline, status=status, **(fields | extra))
    if fingerprint is not None and "subsets" in record:
        record["subsets"] = {**record["subsets"], "eval": {"task": task, "split": "validation", "size": len(correct),
                                                           "seed": 0, "fingerprint": f"{task}-{fingerprint}"}}  # fmt: skip
    return record


def _correct(rng, n, p):
    return [int(x) for x in rng.random(n) < p]


def test_failed_to_learn_and_kn_counting():
    ok = make_record("rte", "plain", 0, 0.70, majority_baseline=0.5)
    at_baseline = make_record("rte", "plain", 1, 0.5, majority_baseline=0.5)
    flagged = make_record("rte", "plain", 2, 0.9, majority_baseline=0.5, failed_to_learn=True)
    diverged = make_record("rte", "plain", 3, 0.8, status="diverged", majority_baseline=0.5)
    failed = make_record("rte", "plain", 4, None, status="failed")
    no_baseline = make_record("rte", "plain", 5, 0.3)
    assert [stats.failed_to_learn(r) for r in (ok, at_baseline, flagged, diverged, failed, no_baseline)] == [
        False, True, True, True, True, False]  # fmt: skip
    assert stats.count_failed_to_learn([ok, at_baseline, diverged, failed]) == (3, 4)
    md = tables.render([ok, at_baseline, diverged])["table.md"]
    cell = _md_rows(md, tables.MAIN_TITLE)[1][3]
    assert cell == "60.0 ± 14.1 (2/3 ok) ⚠2/3"  # mean of the 2 ok seeds; the diverged run still counts in n
    assert "⚠k/n = k of the n recorded runs failed to learn" in md
    per_seed = _md_rows(md, "Per seed: headline metric (%), every run")[1:]
    assert [r[3] for r in per_seed] == ["70.00", "50.00 ✗", "80.00 (diverged)"]


def _t_reference(diffs):
    """The paired t-interval from scipy (float64): mean, (low, high), two-sided p."""
    d = np.asarray(diffs, dtype=np.float64)
    result = scipy_stats.ttest_1samp(d, 0.0)
    low, high = scipy_stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=scipy_stats.sem(d))
    return d.mean(), (low, high), result.pvalue


def test_paired_difference_t_interval_against_scipy_and_bootstrap_beside_it():
    rng = np.random.default_rng(0)
    base = [_rec("rte", "plain", s, _correct(rng, 300, 0.6)) for s in range(4)]
    better = [_rec("rte", "hybrid", s, _correct(rng, 300, 0.8)) for s in range(4)]
    same = [_rec("rte", "lora", r["seed"], [row[0] for row in r["eval_stats"]["rows"]]) for r in base]
    d = stats.paired_difference(better, base)
    per_seed = [100 * (m["headline"] - b["headline"]) for m, b in zip(better, base, strict=True)]
    mean, (low, high), p = _t_reference(per_seed)
    assert d.diff == pytest.approx(mean, abs=1e-9) and d.n_seeds == 4 and d.draw == stats.SHARED
    assert (d.t_low, d.t_high, d.p_value) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9),
                                              pytest.approx(p, rel=1e-9))  # fmt: skip
    assert d.excludes_zero and 0 < d.boot_low < d.diff < d.boot_high and d.unpaired == () and d.note == ""
    zero = stats.paired_difference(same, base)
    assert (zero.diff, zero.t_low, zero.t_high, zero.p_value, zero.boot_low, zero.boot_high) == (0, 0, 0, 1.0, 0, 0)
    noisy = [_rec("rte", "lora", s, _correct(rng, 300, 0.6)) for s in range(4)]
    similar = stats.paired_difference(noisy, base)
    assert similar.t_low < 0 < similar.t_high and not similar.excludes_zero
    # deterministic, and the grouped form gives exactly what one call gives
    assert stats.paired_difference(better, base) == d
    grouped = stats.paired_differences({"hybrid": better, "lora": noisy}, base)
    assert grouped == {"hybrid": d, "lora": similar}


def _shared_reference(method_rows, base_rows, n_boot, seed):
    """The shared-draw bootstrap written out resample by resample: seeds drawn, then ONE draw of the examples used
    for every drawn seed, accuracy recomputed per seed, averaged; percentile interval of method − baseline."""
    rng = np.random.default_rng(seed)
    n_seeds, n = len(method_rows), len(method_rows[0])
    choice = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    idx = rng.integers(0, n, size=(n_boot, n))
    diffs = []
    for b in range(n_boot):
        m = [100 * np.mean(method_rows[s][idx[b]]) for s in choice[b]]
        t = [100 * np.mean(base_rows[s][idx[b]]) for s in choice[b]]
        diffs.append(np.mean(m) - np.mean(t))
    return np.percentile(diffs, [2.5, 97.5])


def test_shared_example_draw_matches_a_loop_reference_and_is_wider_than_per_seed_draws():
    rng = np.random.default_rng(11)
    difficulty = rng.random(400)  # examples shared by every seed: some are hard for every model
    base = [_rec("sst2", "plain", s, [int(x) for x in rng.random(400) < 0.3 + 0.6 * difficulty]) for s in range(3)]
    mine = [_rec("sst2", "hybrid", s, [int(x) for x in rng.random(400) < 0.35 + 0.6 * difficulty]) for s in range(3)]
    d = stats.paired_difference(mine, base, n_boot=400, seed=3)
    rows = [[np.asarray(r["eval_stats"]["rows"])[:, 0] for r in side] for side in (mine, base)]
    low, high = _shared_reference(*rows, 400, 3)
    assert d.draw == stats.SHARED and (d.boot_low, d.boot_high) == (pytest.approx(low, abs=1e-9),
                                                                   pytest.approx(high, abs=1e-9))  # fmt: skip
    # the same runs with their subsets unrecorded: examples drawn per seed, a narrower (too narrow) interval
    loose = stats.paired_difference(*[[_rec(r["task"], r["method"], r["seed"], [x[0] for x in r["eval_stats"]["rows"]],
                                             fingerprint=None) for r in side] for side in (mine, base)],
                                    n_boot=400, seed=3)  # fmt: skip
    assert loose.draw == stats.PER_SEED and (loose.t_low, loose.t_high) == (d.t_low, d.t_high)
    assert loose.boot_high - loose.boot_low < d.boot_high - d.boot_low


def test_unpaired_seeds_are_named_and_bad_input_raises_naming_the_runs():
    rng = np.random.default_rng(1)
    base = [_rec("rte", "plain", s, _correct(rng, 100, 0.6)) for s in range(3)]
    other = [_rec("rte", "hybrid", s, _correct(rng, 100, 0.7)) for s in range(3)]
    other[2] = {**other[2], "status": "diverged"}
    two = stats.paired_difference(other, base)  # seed 2 diverged: paired on seeds 0 and 1, and said so
    assert two.n_seeds == 2 and two.t_low <= two.diff <= two.t_high and two.boot_low is not None
    assert two.unpaired == ("minilm/hybrid/rte seed 2 (diverged)", "minilm/plain/rte seed 2")
    one = stats.paired_difference(other[:1], base)  # one seed: no t-interval, ever
    assert one.n_seeds == 1 and one.t_low is None and one.t_high is None and one.p_value is None
    assert not one.excludes_zero and one.diff == pytest.approx(100 * (other[0]["headline"] - base[0]["headline"]))
    assert stats.paired_difference([], base) is None
    no_stats = [base[0], {k: v for k, v in base[1].items() if k != "eval_stats"}, base[2]]
    d = stats.paired_difference(other[:2], no_stats)
    assert d.draw == stats.NO_DRAW and d.boot_low is None and d.t_low is not None
    assert "minilm/plain/rte seed 1: its metric has no per-example statistics" in d.note
    with pytest.raises(stats.MissingExampleStats, match="minilm/plain/rte seed 1"):
        stats.paired_difference(other[:2], no_stats, require_examples=True)
    wrong = {**base[0], "headline": 0.99}  # eval_stats that contradict the headline: not resampled, and said so
    assert "minilm/plain/rte seed 0: eval_stats give" in stats.paired_difference(other[:1], [wrong]).note
    with pytest.raises(stats.MissingExampleStats, match="minilm/plain/rte seed 0: eval_stats give"):
        stats.paired_difference(other[:1], [wrong], require_examples=True)
    elsewhere = _rec("rte", "plain", 0, [row[0] for row in base[0]["eval_stats"]["rows"]], fingerprint="other")
    with pytest.raises(stats.StatsInputError, match="minilm/hybrid/rte seed 0 and minilm/plain/rte seed 0 were "
                                                    "scored on different evaluation subsets"):  # fmt: skip
        stats.paired_difference(other[:1], [elsewhere])
    short = _rec("rte", "plain", 0, [1, 0, 1])
    with pytest.raises(stats.StatsInputError, match="different lengths"):
        stats.paired_difference(other[:1], [short])


def test_t_interval_and_holm_by_hand():
    t = stats.t_interval([1.0, 2.0, 3.0])  # mean 2, s = 1, t(0.975; 2) = 4.302653
    assert (t.n, t.mean) == (3, 2.0)
    assert (t.low, t.high) == (pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-6),
                               pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-6))  # fmt: skip
    assert t.p_value == pytest.approx(scipy_stats.ttest_1samp([1.0, 2.0, 3.0], 0).pvalue, rel=1e-12)
    assert stats.t_interval([4.0]) == stats.TInterval(1, 4.0, None, None, None)
    assert stats.t_interval([]) == stats.TInterval(0, None, None, None, None)
    assert stats.t_interval([2.0, 2.0]).p_value == 0.0 and stats.t_interval([0.0, 0.0]).p_value == 1.0
    with pytest.raises(ValueError, match="finite"):
        stats.t_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        stats.t_interval([1.0, 2.0], confidence=95)
    # Holm, m = 4 at 5 %: 0.005 ≤ 0.0125 and 0.01 ≤ 0.05/3 are rejected; 0.03 > 0.025 stops the descent
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert stats.holm([0.01, None, 0.2]) == [True, False, False]  # None: no test, not counted (m = 2)
    assert stats.holm([0.026, 0.026]) == [False, False] and stats.holm([0.025, 0.05]) == [True, True]
    assert stats.holm([]) == []
    with pytest.raises(ValueError, match="p-values"):
        stats.holm([1.5])


def test_bootstrap_on_counts_and_correlation_kinds():
    rng = np.random.default_rng(2)
    label = rng.normal(size=200)
    runs = {}
    for method, noise in (("plain", 1.5), ("hybrid", 0.3)):
        runs[method] = []
        for s in range(2):
            rows = np.stack([label + rng.normal(scale=noise, size=200), label], axis=1).tolist()
            head = stats.metric_from_stats("pearson", rows)
            runs[method].append(make_record("stsb", method, s, head, eval_stats={"kind": "pearson", "rows": rows}))
    d = stats.paired_difference(runs["hybrid"], runs["plain"], n_boot=500)
    assert d.draw == stats.PER_SEED and d.boot_low > 0  # no eval fingerprints recorded: examples drawn per seed


# ----------------------------------------------------------------------------------------------------------- tables
def _suite() -> list[dict]:
    rng = np.random.default_rng(5)
    records = []
    for task, p_plain in (("rte", 0.6), ("sst2", 0.7)):
        for seed in range(3):
            for method, p, flops in (("plain", p_plain, 1e15), ("plain_matched", p_plain + 0.02, 3.1e15),
                                     ("hybrid", p_plain + 0.15, 3e15)):  # fmt: skip
                tokens = {"train_tokens": 40_000, "forward_tokens": 40_000 * (3 if method == "hybrid" else 1),
                          "optimizer_steps": 32 * (3 if method != "plain" else 1), "train_flops": flops * (1 + seed / 10)}  # fmt: skip
                records.append(_rec(task, method, seed, _correct(rng, 200, p), **tokens))
    return records


def test_compute_ratio_column_and_compute_tables():
    md = tables.render(_suite(), references=[])["table.md"]
    rows = {r[1]: r for r in _md_rows(md, tables.MAIN_TITLE)[1:]}
    assert rows["plain"][-1] == "1.00" and rows["hybrid"][-1] == "3.00" and rows["plain_matched"][-1] == "3.10"
    assert list(rows) == ["plain", "plain_matched", "hybrid", "majority baseline"]
    assert rows["majority baseline"][3:] == ["50.0", "50.0", "–"]
    compute = _md_rows(md, "Training compute per run (median over tasks and seeds; every training stage summed)")
    assert compute[0] == ["Model", "Method", "Runs", "Train tokens", "Forward tokens", "Optimizer steps",
                          "Train FLOPs"]  # fmt: skip
    assert compute[3] == ["minilm", "hybrid", "6", "40.0K", "0.12M", "96", "3.3e15"]
    match = _md_rows(md, "Compute match: train FLOPs of plain_matched ÷ hybrid, median over seeds")
    assert match == [["Model", "Ratio", "SST-2", "RTE", "All tasks"],
                     ["minilm", "plain_matched ÷ hybrid", "1.03", "1.03", "1.03 (1.03–1.03)"]]  # fmt: skip
    old = [make_record("rte", m, 0, 0.6) for m in ("plain", "hybrid")]  # records without the new fields
    md_old = tables.render(old, references=[])["table.md"]
    assert _md_rows(md_old, tables.MAIN_TITLE)[1][-1] == "–" and "Training compute" not in md_old
    assert "Compute match" not in md_old and "| majority baseline |" not in md_old
    assert "2 ok runs carry neither failed_to_learn nor a majority baseline" in md_old


def test_difference_table_bolds_only_holm_significant_t_intervals():
    records = _suite()
    md = tables.render(records, references=[])["table.md"]
    title = "Differences vs plain and vs plain_matched (percentage points, 95 % intervals)"
    header, *rows = _md_rows(md, title)
    assert header == ["Model", "Baseline", "Method", "Seeds", "SST-2 t-interval", "SST-2 bootstrap (examples)",
                      "RTE t-interval", "RTE bootstrap (examples)"]  # fmt: skip
    assert [r[1:4] for r in rows] == [["plain", "plain_matched", "3"], ["plain", "hybrid", "3"],
                                      ["plain_matched", "plain", "3"], ["plain_matched", "hybrid", "3"]]  # fmt: skip
    # the decision by hand: scipy's paired t-test per cell, Holm over the 4 comparisons of each baseline
    for baseline in ("plain", "plain_matched"):
        cells_, ps = [], []
        for row in rows:
            if row[1] != baseline:
                continue
            for j, task in ((4, "sst2"), (6, "rte")):
                mine = sorted(
                    (r for r in records if r["method"] == row[2] and r["task"] == task), key=lambda r: r["seed"]
                )
                base = sorted((r for r in records if r["method"] == baseline and r["task"] == task), key=lambda r: r["seed"])  # fmt: skip
                _, (low, high), p = _t_reference(
                    [100 * (m["headline"] - b["headline"]) for m, b in zip(mine, base, strict=True)]
                )
                assert row[j].strip("*").endswith(f"[{table_core.fmt_signed(low)}, {table_core.fmt_signed(high)}]")
                assert row[j + 1].startswith("[") and row[j + 1].endswith("]")
                cells_.append(row[j])
                ps.append(p)
        order = sorted(range(len(ps)), key=lambda k: ps[k])
        expected, stop = [False] * len(ps), False
        for rank, k in enumerate(order):
            stop = stop or ps[k] > 0.05 / (len(ps) - rank)
            expected[k] = not stop
        assert [c.startswith("**") for c in cells_] == expected
    assert "after Holm's correction" in md and "2000 resamples" in md and "the interval that decides" in md


def test_summary_and_differences_csv_match_the_statistics():
    import csv
    import io

    records = _suite()
    out = tables.render(records, references=[])
    summary = list(csv.DictReader(io.StringIO(out["summary.csv"])))
    assert list(summary[0]) == list(tables.SUMMARY_FIELDS) and len(summary) == 6
    hybrid = next(r for r in summary if (r["task"], r["method"]) == ("rte", "hybrid"))
    scores = [100 * r["headline"] for r in records if (r["task"], r["method"]) == ("rte", "hybrid")]
    _, (low, high), _ = _t_reference(scores)
    assert float(hybrid["mean"]) == pytest.approx(statistics.fmean(scores), abs=1e-4)
    assert float(hybrid["std"]) == pytest.approx(statistics.stdev(scores), abs=1e-4)
    assert (float(hybrid["t_low"]), float(hybrid["t_high"])) == (pytest.approx(low, abs=1e-4),
                                                                 pytest.approx(high, abs=1e-4))  # fmt: skip
    assert (hybrid["n"], hybrid["n_failed_to_learn"], hybrid["n_collapsed"], hybrid["n_weak_teacher"]) == ("3", "0",
                                                                                                         "0", "0")  # fmt: skip
    diffs = list(csv.DictReader(io.StringIO(out["differences.csv"])))
    assert list(diffs[0]) == list(tables.DIFFERENCE_FIELDS) and len(diffs) == 8
    row = next(r for r in diffs if (r["task"], r["method"], r["baseline"]) == ("sst2", "hybrid", "plain"))
    d = stats.paired_difference([r for r in records if (r["task"], r["method"]) == ("sst2", "hybrid")],
                                [r for r in records if (r["task"], r["method"]) == ("sst2", "plain")])  # fmt: skip
    assert [float(row[k]) for k in ("diff", "t_low", "t_high", "boot_low", "boot_high")] == [
        pytest.approx(v, abs=1e-4) for v in (d.diff, d.t_low, d.t_high, d.boot_low, d.boot_high)]  # fmt: skip
    assert row["n_pairs"] == "3" and row["holm_significant"] in ("true", "false")
    one = tables.render([r for r in records if r["seed"] == 0], references=[])["differences.csv"]
    one_seed = list(csv.DictReader(io.StringIO(one)))
    assert len(one_seed) == 8 and all(r["n_pairs"] == "1" and r["t_low"] == r["t_high"] == "" for r in one_seed)
    assert all(r["holm_significant"] == "false" for r in one_seed)  # never computed on one seed


def test_extra_split_column():
    records = [make_record("mnli", "plain", s, 0.8 + s / 100, extra_metrics={"validation_mismatched":
               {"accuracy": 0.7 + s / 100}}) for s in (0, 1)]  # fmt: skip
    header, row = _md_rows(tables.render(records, references=[])["table.md"], tables.MAIN_TITLE)
    assert header[3:5] == ["MNLI (Acc)", "MNLI-mm (Acc)"]
    assert row[3:5] == ["80.5 ± 0.7", "70.5 ± 0.7"]


def test_median_shown_from_three_seeds():
    records = [make_record("rte", "plain", s, v) for s, v in enumerate((0.60, 0.61, 0.70))]
    row = _md_rows(tables.render(records, references=[])["table.md"], tables.MAIN_TITLE)[1]
    assert row[3] == f"63.7 ± {statistics.stdev([60, 61, 70]):.1f} (med 61.0)"


def test_reference_rows_only_in_their_own_table():
    ours = [make_record("rte", "plain", s, 0.7 + s / 100, model="roberta-base", trainable=124_647_170) for s in (0, 1)]
    md = tables.render(ours)["table.md"]
    main = _md_rows(md, tables.MAIN_TITLE)
    assert [r[1] for r in main[1:]] == ["plain"] and "†" not in md.split("### ", 2)[1]
    refs = _md_rows(md, "Published reference rows (not run here)")
    assert refs[0] == ["Model", "Row", "Reference model", "# Trainable", "RTE", "Metric notes", "Source"]
    assert refs[1][:5] == ["roberta-base", "FT (Liu et al. 2019)", "roberta-base", "125M", "78.7"]
    assert refs[2][:5] == ["roberta-base", "LoRA (Hu et al. 2022)", "roberta-base", "0.8M", "86.6"]
    assert "github.com/microsoft/LoRA" in refs[2][-1]
    assert "Published reference rows" not in tables.render([make_record("rte", "plain", 0, 0.7)])["table.md"]


def test_two_renders_are_byte_identical():
    records = _suite()
    first = tables.render(records)
    assert tables.render(list(reversed(records))) == first
    assert set(first) == set(table_core.TABLE_FILES) and "Compute $\\times$plain" in first["table.tex"]


def test_null_peak_memory_shows_a_dash():
    records = [make_record("rte", "plain", s, 0.6, peak_memory_mb=None) for s in (0, 1)]
    rows = _md_rows(tables.render(records, references=[])["table.md"], "Cost per run")
    assert rows[1][8] == "–"
