"""GLUE metric as a local `evaluate` module, configured by task name like the hub's ``glue`` module.

cola → matthews_correlation; stsb → pearson, spearmanr; mrpc, qqp → accuracy, f1; sst2, mnli, mnli_matched,
mnli_mismatched, qnli, rte, wnli, hans, ax → accuracy. Values in 0-1. Differences from the hub module, all
deliberate: STS-B inputs stay float64 (the hub's float32 features and numpy format round them); F1 uses
zero_division=0 (the same value, without sklearn's warning when a model never predicts the positive class); a
correlation with a constant vector is NaN without scipy's warning (it is undefined, and NaN says so).
"""

import warnings

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

_DESCRIPTION = "GLUE (General Language Understanding Evaluation) metric for one task, chosen by config name."
_CITATION = """@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={ICLR}, year={2019}}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels (int), or scores (float) for stsb.
    references: gold labels (int), or scores (float) for stsb.
Returns: a dict with the task's metrics (see the module docstring).
Example:
    >>> glue = evaluate.load("bench/metrics/glue", "mrpc")
    >>> glue.compute(predictions=[0, 1], references=[0, 1])
    {'accuracy': 1.0, 'f1': 1.0}
"""

CONFIGS = (
    "cola",
    "sst2",
    "mrpc",
    "stsb",
    "qqp",
    "mnli",
    "mnli_matched",
    "mnli_mismatched",
    "qnli",
    "rte",
    "wnli",
    "hans",
    "ax",
)


def simple_accuracy(predictions, references) -> float:
    return float((np.asarray(predictions) == np.asarray(references)).mean())


def accuracy_and_f1(predictions, references) -> dict:
    f1 = f1_score(y_true=references, y_pred=predictions, zero_division=0)
    return {"accuracy": simple_accuracy(predictions, references), "f1": float(f1)}


def pearson_and_spearman(predictions, references) -> dict:
    predictions, references = np.asarray(predictions, np.float64), np.asarray(references, np.float64)
    if np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return {"pearson": float("nan"), "spearmanr": float("nan")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 2-point inputs: scipy warns about the p-value only
        return {
            "pearson": float(pearsonr(predictions, references)[0]),
            "spearmanr": float(spearmanr(predictions, references)[0]),
        }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise KeyError(f"glue config must be one of {list(CONFIGS)}, got {self.config_name!r}")
        dtype = "float64" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            codebase_urls=[],
            reference_urls=["https://gluebenchmark.com/"],
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("glue: predictions and references are empty")
        predictions, references = np.asarray(predictions), np.asarray(references)
        if self.config_name == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if self.config_name == "stsb":
            return pearson_and_spearman(predictions, references)
        if self.config_name in ("mrpc", "qqp"):
            return accuracy_and_f1(predictions, references)
        return {"accuracy": simple_accuracy(predictions, references)}
