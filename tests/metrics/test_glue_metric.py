"""The local glue module against sklearn / scipy on random predictions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bench.metrics import load


def _labels(seed, n, classes):
    rng = np.random.default_rng(seed)
    return rng.integers(0, classes, n).tolist(), rng.integers(0, classes, n).tolist()


@pytest.mark.parametrize(
    "config", ["sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "hans", "ax"]
)
def test_accuracy_tasks(config, seed):
    predictions, references = _labels(seed, 301, 3 if config.startswith("mnli") or config == "ax" else 2)
    assert load("glue", config).compute(predictions=predictions, references=references) == pytest.approx(
        {"accuracy": accuracy_score(references, predictions)}, abs=1e-12
    )


@pytest.mark.parametrize("config", ["mrpc", "qqp"])
def test_accuracy_and_f1_tasks(config, seed):
    predictions, references = _labels(seed, 257, 2)
    scores = load("glue", config).compute(predictions=predictions, references=references)
    assert scores == pytest.approx(
        {"accuracy": accuracy_score(references, predictions), "f1": f1_score(references, predictions)}, abs=1e-12
    )


def test_f1_without_positive_predictions_is_zero_without_warning():
    scores = load("glue", "mrpc").compute(predictions=[0, 0, 0], references=[0, 0, 0])
    assert scores == {"accuracy": 1.0, "f1": 0.0}


def test_cola_matthews(seed):
    predictions, references = _labels(seed, 400, 2)
    scores = load("glue", "cola").compute(predictions=predictions, references=references)
    assert scores == pytest.approx({"matthews_correlation": matthews_corrcoef(references, predictions)}, abs=1e-12)


def test_stsb_pearson_and_spearman_in_float64(seed):
    rng = np.random.default_rng(seed)
    references = rng.uniform(0, 5, 500)
    predictions = references + rng.normal(0, 1.5, 500)
    scores = load("glue", "stsb").compute(predictions=predictions.tolist(), references=references.tolist())
    assert scores["pearson"] == pytest.approx(pearsonr(predictions, references)[0], abs=1e-12)
    assert scores["spearmanr"] == pytest.approx(spearmanr(predictions, references)[0], abs=1e-12)
    constant = load("glue", "stsb").compute(predictions=[2.0] * 4, references=[0.0, 1.0, 2.0, 3.0])
    assert np.isnan(constant["pearson"]) and np.isnan(constant["spearmanr"])


def test_bad_configs_and_inputs():
    with pytest.raises(ValueError, match="needs config_name"):
        load("glue")
    with pytest.raises(KeyError, match="glue config must be one of"):
        load("glue", "sst-2")
    with pytest.raises(ValueError, match="Mismatch in the number"):
        load("glue", "rte").compute(predictions=[0, 1], references=[0])
