"""bench.stats and the tables built on it: hand-checkable metrics from eval_stats, the paired bootstrap, k/n of runs
that failed to learn, the compute columns, reference rows out of the main table, byte-identical renders."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from bench import stats, tables
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
def _rec(task, method, seed, correct, *, status="ok", majority=0.5, **extra):
    """A record whose headline is the accuracy of its 0/1 per-example ``correct`` list (eval_stats "mean")."""
    headline = statistics.fmean(correct) if status != "failed" else None
    fields = {"majority_baseline": majority, "eval_stats": {"kind": "mean", "rows": [[c] for c in correct]}}
    return make_record(task, method, seed, headline, status=status, **(fields | extra))


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
    assert cell == "**60.0 ± 14.1 (2/3 ok) ⚠2/3**"  # mean of the 2 ok seeds; the diverged run still counts in n
    assert "⚠k/n" in md
    per_seed = _md_rows(md, "Per seed: headline metric (%), every run")[1:]
    assert [r[3] for r in per_seed] == ["70.00", "50.00 ✗", "80.00 (diverged)"]


def test_paired_bootstrap_separates_a_better_method_and_not_identical_ones():
    rng = np.random.default_rng(0)
    base = [_rec("rte", "plain", s, _correct(rng, 300, 0.6)) for s in range(3)]
    better = [_rec("rte", "hybrid", s, _correct(rng, 300, 0.8)) for s in range(3)]
    same = [_rec("rte", "lora", r["seed"], [row[0] for row in r["eval_stats"]["rows"]]) for r in base]
    d = stats.paired_difference(better, base)
    expected = statistics.fmean(tables.score(r) for r in better) - statistics.fmean(tables.score(r) for r in base)
    assert d.method == "seeds+examples" and d.n_seeds == 3 and d.diff == pytest.approx(expected)
    assert d.excludes_zero and 0 < d.low < d.diff < d.high
    zero = stats.paired_difference(same, base)
    assert zero.diff == 0 and zero.low == zero.high == 0 and not zero.excludes_zero
    noisy = [_rec("rte", "lora", s, _correct(rng, 300, 0.6)) for s in range(3)]
    similar = stats.paired_difference(noisy, base)
    assert similar.low < 0 < similar.high and not similar.excludes_zero
    # deterministic, and the grouped form gives exactly what one call gives
    assert stats.paired_difference(better, base) == d
    grouped = stats.paired_differences({"hybrid": better, "lora": noisy}, base)
    assert grouped == {"hybrid": d, "lora": similar}


def test_bootstrap_falls_back_to_seeds_and_pairs_only_shared_ok_seeds():
    rng = np.random.default_rng(1)
    base = [_rec("rte", "plain", s, _correct(rng, 100, 0.6)) for s in range(3)]
    other = [_rec("rte", "hybrid", s, _correct(rng, 100, 0.7)) for s in range(3)]
    other[2] = {**other[2], "status": "diverged"}
    del base[1]["eval_stats"]
    two = stats.paired_difference(other, base)  # seed 2 diverged: seeds 0 and 1, seed-only interval
    assert two.method == "seeds" and two.n_seeds == 2 and two.low <= two.diff <= two.high
    assert two.note == "baseline seed 1: eval_stats missing"
    one = stats.paired_difference(other[:1], base)
    assert one.method == "seeds+examples" and one.n_seeds == 1 and one.low < one.diff < one.high
    d = stats.paired_difference(other[1:], base)
    assert d.method == "seeds" and d.n_seeds == 1 and d.low is None and d.high is None and not d.excludes_zero
    assert d.diff == pytest.approx(tables.score(other[1]) - tables.score(base[1]))
    assert stats.paired_difference([], base) is None
    wrong = {**base[0], "headline": 0.99}  # eval_stats that disagree with the headline are not used
    assert "eval_stats give" in stats.paired_difference(other[:1], [wrong]).note


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
    assert d.method == "seeds+examples" and d.excludes_zero and d.low > 0


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
    assert rows["majority baseline"][3:6] == ["50.0", "50.0", "50.0"]
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


def test_difference_table_marks_intervals_that_exclude_zero():
    md = tables.render(_suite(), references=[])["table.md"]
    title = "Differences vs plain and vs plain_matched (percentage points, 95 % CI)"
    header, *rows = _md_rows(md, title)
    assert header == ["Model", "Baseline", "Method", "Seeds", "SST-2", "RTE"]
    assert [r[1:4] for r in rows] == [["plain", "plain_matched", "3"], ["plain", "hybrid", "3"],
                                      ["plain_matched", "plain", "3"], ["plain_matched", "hybrid", "3"]]  # fmt: skip
    hybrid_vs_plain = rows[1][4]
    assert hybrid_vs_plain.startswith("**+") and hybrid_vs_plain.endswith("]**")
    assert "2000 resamples" in md and "two-level" in md


def test_extra_split_column():
    records = [make_record("mnli", "plain", s, 0.8 + s / 100, extra_metrics={"validation_mismatched":
               {"accuracy": 0.7 + s / 100}}) for s in (0, 1)]  # fmt: skip
    header, row = _md_rows(tables.render(records, references=[])["table.md"], tables.MAIN_TITLE)
    assert header[3:5] == ["MNLI (Acc)", "MNLI-mm (Acc)"]
    assert row[3:5] == ["**80.5 ± 0.7**", "**70.5 ± 0.7**"]


def test_median_shown_from_three_seeds():
    records = [make_record("rte", "plain", s, v) for s, v in enumerate((0.60, 0.61, 0.70))]
    row = _md_rows(tables.render(records, references=[])["table.md"], tables.MAIN_TITLE)[1]
    assert row[3] == f"**63.7 ± {statistics.stdev([60, 61, 70]):.1f} (med 61.0)**"


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
    assert "\\textbf{" in first["table.tex"] and "Compute $\\times$plain" in first["table.tex"]


def test_null_peak_memory_shows_a_dash():
    records = [make_record("rte", "plain", s, 0.6, peak_memory_mb=None) for s in (0, 1)]
    rows = _md_rows(tables.render(records, references=[])["table.md"], "Cost per run")
    assert rows[1][8] == "–"
