"""Per-example statistics reproduce each task's headline; trivial baselines; failed_to_learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import f1_score, matthews_corrcoef

from bench.experiment import RunConfig, prepare_data
from bench.scoring import example_stats, failed_to_learn, majority_baseline, metric_from_stats


def test_metric_from_stats_against_sklearn_and_scipy(seed):
    rng = np.random.default_rng(seed)
    pred, gold = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    tp, fp = (pred == 1) & (gold == 1), (pred == 1) & (gold == 0)
    fn, tn = (pred == 0) & (gold == 1), (pred == 0) & (gold == 0)
    assert metric_from_stats("mean", (pred == gold)[:, None]) == pytest.approx((pred == gold).mean())
    assert metric_from_stats("f1_counts", np.stack([tp, fp, fn], 1)) == pytest.approx(f1_score(gold, pred))
    mcc = metric_from_stats("mcc_counts", np.stack([tp, fp, fn, tn], 1))
    assert mcc == pytest.approx(matthews_corrcoef(gold, pred))
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    x[::7] = x[0]  # ties, for the rank correlation
    rows = np.stack([x, y], 1)
    assert metric_from_stats("pearson", rows) == pytest.approx(scipy_stats.pearsonr(x, y)[0])
    assert metric_from_stats("spearman", rows) == pytest.approx(scipy_stats.spearmanr(x, y)[0])


def test_undefined_metrics_are_zero_not_nan():
    assert metric_from_stats("mcc_counts", [[0, 0, 3, 5]]) == 0.0  # never predicts the positive class
    assert metric_from_stats("pearson", [[1.0, 2.0], [1.0, 3.0]]) == 0.0  # constant prediction
    assert metric_from_stats("f1_counts", [[0, 0, 0]]) == 0.0


@pytest.mark.parametrize(("kind", "rows", "match"), [("median", [[1]], "kind"), ("f1_counts", [[1, 2]], "rows of 3")])
def test_bad_stats_are_named(kind, rows, match):
    with pytest.raises(ValueError, match=match):
        metric_from_stats(kind, rows)


def _prepared(task, data_dir, n=48):
    cfg = RunConfig(task=task, method="plain", seed=0, model="tiny-bert", train_size=8, eval_size=n, max_length=64,
                    data_dir=str(data_dir))  # fmt: skip
    return prepare_data(cfg)


def _random_predictions(data, rng):
    task, features = data.task, data.eval_features
    if task.kind == "regression":
        return rng.normal(size=(len(features), 1)).astype(np.float32)
    if task.kind == "classification":
        return rng.normal(size=(len(features), task.num_labels)).astype(np.float32)
    width = max(len(ids) for ids in features["input_ids"])
    if task.kind == "token":
        # mostly O, with some entities, so the F1 is neither 0 nor 1
        logits = rng.normal(size=(len(features), width, task.num_labels)).astype(np.float32)
        logits[..., 0] += 1.5
        return logits
    return tuple(rng.normal(size=(len(features), width)).astype(np.float32) for _ in range(2))


@pytest.mark.parametrize("task", ["sst2", "cola", "mrpc", "stsb", "conll2003", "squad_devsplit"])
def test_example_stats_reproduce_the_task_headline(task, data_dir, seed):
    data = _prepared(task, data_dir)
    predictions = _random_predictions(data, np.random.default_rng(seed))
    metrics = data.task.compute_metrics(predictions, data.eval_features, data.eval_examples)
    stats = example_stats(data.task, predictions, data.eval_features, data.eval_examples)
    assert len(stats["rows"]) == len(data.eval_examples)
    assert metric_from_stats(stats["kind"], stats["rows"]) == pytest.approx(metrics[data.task.headline], abs=1e-6)


def test_majority_baselines(data_dir):
    sst2 = _prepared("sst2", data_dir, n=100)
    labels = np.asarray(sst2.eval_features["labels"])
    assert majority_baseline(sst2.task, sst2.eval_features, sst2.eval_examples) == pytest.approx(
        max(labels.mean(), 1 - labels.mean())
    )
    for task in ("cola", "stsb", "conll2003", "squad_devsplit"):
        data = _prepared(task, data_dir, n=16)
        assert majority_baseline(data.task, data.eval_features, data.eval_examples) == 0.0


def test_failed_to_learn():
    assert failed_to_learn(float("nan"), 0.5) and failed_to_learn(None, 0.0)
    assert failed_to_learn(0.5, 0.5) and failed_to_learn(0.49, 0.5)
    assert not failed_to_learn(0.51, 0.5) and not failed_to_learn(0.1, 0.0)
    assert failed_to_learn(math.inf * 0, 0.0)
