"""The collapsed flag: regressions whose predictions barely vary, classifiers that predict one class far beyond its
share; the prediction share from counts, from correctness and labels, from an eval_labels file; the marks and
counts in the tables, kept apart from failed_to_learn."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from bench import stats, tables
from tests.bench.synthetic import make_record


def _regression(seed: int, scale: float, method: str = "adapter", rng=None) -> dict:
    rng = rng or np.random.default_rng(seed)
    label = rng.uniform(0, 5, 150)
    pred = 2.5 + scale * (label - 2.5) + rng.normal(0, 0.05 * max(scale, 0.01), 150)
    rows = np.stack([pred, label], axis=1).tolist()
    return make_record("stsb", method, seed, stats.metric_from_stats("pearson", rows), task_kind="regression",
                       eval_stats={"kind": "pearson", "rows": rows}, majority_baseline=0.0)  # fmt: skip


def test_regression_collapse_is_the_sd_ratio_below_a_tenth():
    rng = np.random.default_rng(0)
    for scale in (0.02, 0.05, 0.3, 0.9):
        r = _regression(0, scale, rng=rng)
        pred, label = np.asarray(r["eval_stats"]["rows"]).T
        assert stats.collapsed(r) is bool(pred.std() / label.std() < 0.1)
    # a collapsed run can still correlate well: not the same as failing to learn
    tiny = _regression(1, 0.02)
    assert stats.collapsed(tiny) and not stats.failed_to_learn(tiny) and tiny["headline"] > 0.5
    assert stats.collapsed({**tiny, "status": "diverged"}) is None
    flat = {**tiny, "eval_stats": {"kind": "pearson", "rows": [[1.0, 2.0], [2.0, 2.0]]}}
    assert stats.collapsed(flat) is None  # labels without spread: no ratio


@pytest.mark.parametrize(("share", "label_share", "expected"), [(0.97, 0.68, True), (0.90, 0.50, False),
                                                               (0.93, 0.50, True), (0.68, 0.68, False),
                                                               (1.0, 1.0, None)])  # fmt: skip
def test_classification_collapse_rule_by_hand(share, label_share, expected):
    # (0.97 − 0.68) / 0.32 = 0.906 > 0.85; (0.90 − 0.50) / 0.50 = 0.80; (0.93 − 0.5) / 0.5 = 0.86; q = 1: undefined
    r = make_record("mrpc", "lora", 0, 0.7, prediction_share={"class": 1, "share": share, "label_share": label_share})
    assert stats.collapsed(r) is expected
    assert stats.prediction_share(r)["source"] == "recorded"


def test_prediction_share_from_binary_counts_and_from_correctness():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    predicted = np.where(rng.random(400) < 0.9, 1, labels)  # mostly "1"
    tp, fp = (predicted == 1) & (labels == 1), (predicted == 1) & (labels == 0)
    fn, tn = (predicted == 0) & (labels == 1), (predicted == 0) & (labels == 0)
    counts = np.stack([tp, fp, fn, tn], axis=1).astype(int)
    top = int(np.bincount(predicted, minlength=2).argmax())
    expected = (top, np.mean(predicted == top), np.mean(labels == top))
    for kind, rows in (("f1_counts", counts[:, :3]), ("mcc_counts", counts)):
        r = make_record("mrpc", "lora", 0, 0.7, eval_stats={"kind": kind, "rows": rows.tolist()})
        share = stats.prediction_share(r)
        assert (share["class"], share["share"], share["label_share"]) == (expected[0], pytest.approx(expected[1]),
                                                                         pytest.approx(expected[2]))  # fmt: skip
    conll = make_record("conll2003", "lora", 0, 0.7, task_kind="token", eval_stats={"kind": "f1_counts",
                                                                                      "rows": counts[:, :3].tolist()})  # fmt: skip
    assert stats.prediction_share(conll) is None and stats.collapsed(conll) is None  # entity counts: not judged
    correct = (predicted == labels).astype(int)
    share = stats.shares_from_correctness(correct, labels)
    assert (share["class"], share["share"], share["label_share"]) == (expected[0], pytest.approx(expected[1]),
                                                                     pytest.approx(expected[2]))  # fmt: skip
    accuracy_only = make_record("sst2", "lora", 0, float(correct.mean()),
                                eval_stats={"kind": "mean", "rows": correct[:, None].tolist()})  # fmt: skip
    assert stats.prediction_share(accuracy_only) is None and stats.collapsed(accuracy_only) is None  # not recorded
    with pytest.raises(stats.StatsInputError, match="as many labels"):
        stats.shares_from_correctness(correct, labels[:-1])
    with pytest.raises(stats.StatsInputError, match="binary"):
        stats.shares_from_correctness(correct, labels + 1)


def _accuracy_run(seed, correct, fingerprint, method="lora", shift=None):
    r = make_record("mrpc", method, seed, float(np.mean(correct)), majority_baseline=0.68,
                    eval_stats={"kind": "mean", "rows": [[int(c)] for c in correct]})  # fmt: skip
    r["subsets"] = {**r["subsets"], "eval": {"fingerprint": fingerprint}}
    if shift is not None:
        r["shift_metrics"] = {"paws": {"role": "shift", "headline": float(np.mean(shift)), "headline_metric": "accuracy",
                                       "majority_baseline": 0.5, "eval_stats": {"kind": "mean", "rows": [[int(c)] for c in shift]},
                                       "subset": {"fingerprint": "shift-fp"}}}  # fmt: skip
    return r


def test_attach_labels_derives_the_share_and_the_tables_mark_and_count_it():
    rng = np.random.default_rng(5)
    labels = (rng.random(200) < 0.68).astype(int)  # 68 % paraphrases
    shift_labels = (rng.random(100) < 0.5).astype(int)
    always_one = labels == 1  # predicts "paraphrase" for every pair: correct exactly where the label is 1
    balanced = np.where(rng.random(200) < 0.8, labels, 1 - labels) == labels
    runs = [_accuracy_run(s, always_one, "fp", shift=shift_labels == 1) for s in range(3)]
    runs += [_accuracy_run(s, balanced, "fp", method="plain", shift=rng.random(100) < 0.7) for s in range(3)]
    labels_file = {"fp": {"num_labels": 2, "labels": labels.tolist()}, "shift-fp": {"num_labels": 2,
                                                                                   "labels": shift_labels.tolist()}}  # fmt: skip
    attached = stats.attach_labels(runs, labels_file)
    assert "prediction_share" not in runs[0]  # inputs unchanged
    share = attached[0]["prediction_share"]
    assert (share["class"], share["share"], share["label_share"]) == (1, 1.0, pytest.approx(labels.mean(), abs=1e-6))
    assert share["source"] == "eval_labels.json" and stats.collapsed(attached[0])
    assert attached[0]["shift_metrics"]["paws"]["prediction_share"]["share"] == 1.0
    assert not stats.collapsed(attached[3])
    out = tables.render(runs, references=[], labels=labels_file)
    main = out["table.md"].split("### Headline metric", 1)[1].split("\n### ", 1)[0]
    assert "⚠collapsed 3/3" in main and "Two ⚠ marks, counted apart" in main and "Collapse not judged" not in main
    summary = {r["method"]: r for r in csv.DictReader(io.StringIO(out["summary.csv"]))}
    assert (summary["lora"]["n_collapsed"], summary["plain"]["n_collapsed"]) == ("3", "0")
    assert summary["lora"]["n_failed_to_learn"] == "0" and summary["lora"]["n"] == "3"  # flagged, kept in the mean
    ood = out["table.md"].split("### Out of distribution: headline", 1)[1].split("\n### ", 1)[0]
    assert "⚠collapsed 3/3" in ood  # shift sets get the same flag
    per_seed = out["table.md"].split("### Per seed", 1)[1].split("\n### ", 1)[0]
    assert per_seed.count("(collapsed)") == 3 + 1  # three lora seeds, and the note
    # without the labels the same records cannot be judged, and the table says so
    bare = tables.render(runs, references=[])["table.md"]
    assert "⚠collapsed" not in bare.split("### Headline metric", 1)[1].split("\n### ", 1)[0]
    assert "Collapse not judged for 6 ok runs" in bare
    with pytest.raises(stats.StatsInputError, match="minilm/lora/mrpc seed 0: 199 labels for 200 eval rows"):
        stats.attach_labels(runs[:1], {"fp": {"num_labels": 2, "labels": labels.tolist()[:-1]}})


def test_the_record_flag_and_the_library_rule_agree():
    from bench import scoring

    r = _regression(2, 0.03)
    assert scoring.collapsed(r["eval_stats"], None) is True is stats.collapsed(r)
    share = {"class": 1, "share": 0.99, "label_share": 0.6}
    assert scoring.collapsed(None, share) is True and scoring.collapsed(None, {**share, "share": 0.7}) is False
    assert scoring.collapsed(None, None) is None and scoring.collapsed({"kind": "mean", "rows": [[1]]}, None) is None
    # a record that carries only the flag (no rows, no share) is judged by it; its data win where present
    bare = make_record("qqp", "lora", 0, 0.7, collapsed=True)
    assert stats.collapsed(bare) is True and stats.collapsed({**bare, "collapsed": False}) is False
    assert stats.collapsed({**_regression(3, 0.9), "collapsed": True}) is False
