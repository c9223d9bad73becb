"""What a run's score means: per-example statistics of the headline metric, the trivial baseline, failed_to_learn.

Per-example sufficient statistics (``example_stats``) let the tables bootstrap over evaluation examples without
storing predictions: each evaluation example becomes one row, and the headline is a function of the rows. Kinds:

- ``"mean"``: rows [score]; headline = the mean (accuracy 0/1; SQuAD v1.1 per-question F1 or EM, 0–100);
- ``"f1_counts"``: rows [tp, fp, fn]; headline = 2·Σtp / (2·Σtp + Σfp + Σfn) (binary F1; CoNLL entity F1 from
  per-sentence entity counts, which is how seqeval's default (conlleval) mode counts them);
- ``"mcc_counts"``: rows [tp, fp, fn, tn]; headline = Matthews correlation of the summed confusion matrix;
- ``"pearson"`` / ``"spearman"``: rows [prediction, label]; headline = the correlation of the rows.

The headline recomputed from the rows equals the task's own metric (tests check it against the metric modules).

The baseline (``majority_baseline``) is the headline of a trivial predictor on the same evaluation subset: the best
constant class for accuracy and F1 (the majority class for accuracy); 0 for Matthews correlation and correlations
(a constant prediction has no correlation: NaN, fixed at 0); 0 for CoNLL entity F1 (all ``O``); the empty answer
for SQuAD (0 on v1.1; on v2.0 the share of unanswerable questions). The causal_lm tasks follow what they score:
``sst2_lm`` (label-word log-likelihoods) like classification, ``squad_lm`` (generated answers) like SQuAD v1.1.
A task may give its own rows through a method ``example_rows(predictions, features, examples, *, headline)``
(``gsm8k_lm``: kind "mean", [1.0] for a correct answer, [0.0] otherwise); its baseline is 0, as for every task that
generates its answers (no answer is never correct).
A run whose headline is NaN or at or below its baseline is ``failed_to_learn``: shown and counted in the tables,
never dropped.

A classifier's ``prediction_share`` (classification and ``sst2_lm``-like choice tasks; None for every other kind) is
its most-predicted class c (ties: the lowest index), the share s of evaluation rows predicted c and the share q of
rows labelled c. A run is ``collapsed`` (`collapsed`) when a regression's predictions barely vary,
sd(prediction)/sd(label) < 0.1 on the evaluation rows, or when a classifier predicts one class far beyond its share,
(s − q)/(1 − q) > 0.85; None where that cannot be judged (tokens, spans, generated answers). It is kept apart from
``failed_to_learn``: a collapsed regression can still correlate, and a run can fail to learn without collapsing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from seqeval.metrics.sequence_labeling import get_entities

from bench.metrics.squad.squad import exact_match_score, f1_score, max_over_golds
from bench.shift import restrict_entities
from bench.tasks.base import as_numpy

STAT_KINDS = ("mean", "f1_counts", "mcc_counts", "pearson", "spearman")
ROW_WIDTH = {"mean": 1, "f1_counts": 3, "mcc_counts": 4, "pearson": 2, "spearman": 2}
KINDS = STAT_KINDS


# Metrics from per-example statistics: one evaluation (weights of ones) or B bootstrap resamples at once (a (B, n)
# matrix of how often each example was drawn). Spearman ranks with average ties, exactly also inside a resample: an
# example drawn k times is k tied copies.
def as_rows(kind: str, rows: Any) -> np.ndarray:
    if kind not in ROW_WIDTH:
        raise ValueError(f"unknown eval_stats kind {kind!r}; expected one of {KINDS}")
    array = np.asarray(rows, dtype=np.float64)
    if array.ndim == 1 and ROW_WIDTH[kind] == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] != ROW_WIDTH[kind]:
        raise ValueError(f"eval_stats kind {kind!r} needs rows of {ROW_WIDTH[kind]} values, got shape {array.shape}")
    return array


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _constant_side(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) True where every example drawn in a resample has the same value."""
    drawn = weights > 0
    low = np.where(drawn, values[None, :], np.inf).min(axis=1)
    high = np.where(drawn, values[None, :], -np.inf).max(axis=1)
    return low == high


def _weighted_correlation(x: np.ndarray, y: np.ndarray, weights: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Pearson r of each weighted resample; x, y are (n,) or (B, n), centred near their means by cx, cy."""
    x = x - cx
    y = y - cy
    total = weights.sum(axis=1)
    sx, sy = (weights * x).sum(axis=1), (weights * y).sum(axis=1)
    cov = (weights * x * y).sum(axis=1) - sx * sy / total
    vx = (weights * x * x).sum(axis=1) - sx * sx / total
    vy = (weights * y * y).sum(axis=1) - sy * sy / total
    den = np.sqrt(np.clip(vx, 0.0, None) * np.clip(vy, 0.0, None))
    return np.clip(_safe_divide(cov, den), -1.0, 1.0)


def _average_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, n) 1-based average-tie ranks of each example inside each weighted resample (weight = copies drawn)."""
    unique, inverse = np.unique(values, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(unique)))
    copies = np.add.reduceat(weights[:, order], starts, axis=1)  # (B, U) copies drawn per distinct value
    below = np.cumsum(copies, axis=1) - copies
    return (below + (copies + 1.0) / 2.0)[:, inverse]


def metric_from_weights(kind: str, rows: Any, weights: Any) -> np.ndarray:
    """(B,) metric values of B resamples given as draw counts ``weights`` (B, n) of the n rows."""
    data = as_rows(kind, rows)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != len(data):
        raise ValueError(f"weights must be (B, {len(data)}), got {w.shape}")
    if len(data) == 0:
        return np.zeros(len(w))
    if kind == "mean":
        return _safe_divide(w @ data[:, 0], w.sum(axis=1))
    if kind == "f1_counts":
        tp, fp, fn = (w @ data).T
        return _safe_divide(2.0 * tp, 2.0 * tp + fp + fn)
    if kind == "mcc_counts":
        tp, fp, fn, tn = (w @ data).T
        den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return _safe_divide(tp * tn - fp * fn, den)
    x, y = data[:, 0], data[:, 1]
    constant = _constant_side(x, w) | _constant_side(y, w)
    if kind == "pearson":
        r = _weighted_correlation(x, y, w, float(np.mean(x)), float(np.mean(y)))
    else:  # spearman: Pearson of the average-tie ranks inside each resample; their weighted mean is (N + 1) / 2
        centre = (w.sum(axis=1, keepdims=True) + 1.0) / 2.0
        r = _weighted_correlation(_average_ranks(x, w) - centre, _average_ranks(y, w) - centre, w, 0.0, 0.0)
    return np.where(constant, 0.0, r)


def index_weights(idx: Any, n: int) -> np.ndarray:
    """Draw counts (B, n) of an index matrix (B, m) of resampled rows 0..n-1."""
    idx = np.asarray(idx, dtype=np.int64)
    if idx.ndim != 2:
        raise ValueError(f"index matrix must be (B, m), got shape {idx.shape}")
    offsets = (np.arange(len(idx), dtype=np.int64) * n)[:, None]
    return np.bincount((idx + offsets).ravel(), minlength=len(idx) * n).reshape(len(idx), n).astype(np.float64)


def metric_from_stats_boot(kind: str, rows: Any, idx: Any) -> np.ndarray:
    """(B,) metric values of the resamples rows[idx[b]] for an index matrix idx (B, n), vectorised over b."""
    data = as_rows(kind, rows)
    return metric_from_weights(kind, data, index_weights(idx, len(data)))


def metric_from_stats(kind: str, rows: Any) -> float:
    """The headline (raw scale) of one evaluation from its per-example sufficient statistics."""
    data = as_rows(kind, rows)
    return float(metric_from_weights(kind, data, np.ones((1, len(data))))[0])


def _classification_rows(metric: str, predicted: np.ndarray, labels: np.ndarray) -> dict:
    if metric == "accuracy":
        return {"kind": "mean", "rows": (predicted == labels).astype(int)[:, None].tolist()}
    pos_pred, pos_gold = predicted == 1, labels == 1
    tp, fp = pos_pred & pos_gold, pos_pred & ~pos_gold
    fn, tn = ~pos_pred & pos_gold, ~pos_pred & ~pos_gold
    if metric == "f1":
        return {"kind": "f1_counts", "rows": np.stack([tp, fp, fn], axis=1).astype(int).tolist()}
    if metric == "matthews_correlation":
        return {"kind": "mcc_counts", "rows": np.stack([tp, fp, fn, tn], axis=1).astype(int).tolist()}
    raise ValueError(f"no per-example statistics for classification metric {metric!r}")


def _entity_rows(predicted_tags: list[list[str]], gold_tags: list[list[str]]) -> dict:
    rows = []
    for pred, gold in zip(predicted_tags, gold_tags, strict=True):
        p, g = set(get_entities(list(pred))), set(get_entities(list(gold)))
        tp = len(p & g)
        rows.append([tp, len(p) - tp, len(g) - tp])
    return {"kind": "f1_counts", "rows": rows}


def _squad_rows(metric: str, answers: dict, examples) -> dict:
    score = {"f1": f1_score, "exact_match": exact_match_score}[metric]
    rows = []
    for example_id, golds in zip(examples["id"], examples["answers"], strict=True):
        rows.append([100.0 * max_over_golds(score, answers[example_id], golds["text"])])
    return {"kind": "mean", "rows": rows}


def example_stats(task, predictions: Any, features, examples, *, headline: str | None = None,
                  entity_types: tuple[str, ...] | None = None) -> dict | None:  # fmt: skip
    """Per-example rows of ``headline`` (default the task's) for these predictions (module docstring), or None when
    it has no such form here (SQuAD v2.0's thresholded scores). ``entity_types`` (token tasks): count only entities
    of these types, predicted spans of other types dropped (`bench.shift.restrict_entities`)."""
    headline = headline or task.headline
    own = getattr(task, "example_rows", None)
    if callable(own):  # the task scores its examples itself (gsm8k_lm)
        return own(predictions, features, examples, headline=headline)
    if task.kind in ("classification", "regression"):
        logits = as_numpy(predictions)
        labels = np.asarray(features["labels"])
        if task.kind == "regression":
            predicted = logits.reshape(len(logits))
            kind = {"pearson": "pearson", "spearmanr": "spearman"}.get(headline)
            if kind is None:
                return None
            return {"kind": kind, "rows": np.stack([predicted, labels.astype(float)], axis=1).round(6).tolist()}
        return _classification_rows(headline, logits.argmax(axis=-1), labels)
    if task.kind == "token":
        predicted = task.word_tags(predictions, features, examples)
        gold = [[task.label_names[i] for i in tags] for tags in examples[task.tags_column]]
        if entity_types:
            predicted, gold = restrict_entities(predicted, entity_types), restrict_entities(gold, entity_types)
        return _entity_rows(predicted, gold)
    if task.kind == "qa" and not getattr(task, "with_null", False):
        return _squad_rows(headline, task.decode(predictions, features, examples), examples)
    if task.kind == "causal_lm":
        if task.output == "choice":  # label-word log-likelihoods (n, num_labels): classification rows
            return _classification_rows(headline, as_numpy(predictions).argmax(axis=-1), np.asarray(features["labels"]))
        if task.output == "generation":  # generated answers: per-question SQuAD F1 / EM
            return _squad_rows(headline, task.decode(predictions, features, examples), examples)
    return None


def top_class_share(predicted: Any, labels: Any, num_classes: int) -> dict | None:
    """The most-predicted of classes 0..num_classes-1 (ties: the lowest index), the share of rows predicted as it and
    the share of rows labelled it (floats rounded to 6 decimals); None without rows."""
    predicted, labels = np.asarray(predicted).reshape(-1), np.asarray(labels).reshape(-1)
    if len(predicted) != len(labels):
        raise ValueError(f"{len(predicted)} predictions for {len(labels)} labels")
    if len(predicted) == 0:
        return None
    counts = np.bincount(predicted, minlength=num_classes)[:num_classes]
    top = int(np.argmax(counts))  # the first maximum: ties go to the lowest index
    n, labelled = len(predicted), int(np.sum(labels == top))
    return {"class": top, "share": round(int(counts[top]) / n, 6), "label_share": round(labelled / n, 6)}


def prediction_share(task, predictions: Any, features) -> dict | None:
    """``{"class", "share", "label_share"}`` of a classifier's argmax predictions (`top_class_share`) over the
    classes of ``task`` (a choice task: the width of its label-word scores); None for every other task kind."""
    choice = task.kind == "causal_lm" and getattr(task, "output", None) == "choice"
    if task.kind != "classification" and not choice:
        return None
    logits = as_numpy(predictions)
    num_classes = logits.shape[-1] if choice else task.num_labels
    return top_class_share(logits.argmax(axis=-1), features["labels"], num_classes)


COLLAPSE_SD_RATIO = 0.1  # regression: sd(prediction) / sd(label) below this on the eval rows is collapsed
COLLAPSE_EXCESS = 0.85  # classification: (s − q) / (1 − q) above this is collapsed (s, q: prediction_share)


def collapsed(eval_stats: dict | None, share: dict | None) -> bool | None:
    """Whether predictions collapsed (module docstring): from a regression's eval_stats rows [prediction, label], or
    from a classifier's ``prediction_share``; None when neither judges it (or the labels have no spread, or one
    class is every label)."""
    if isinstance(eval_stats, dict) and eval_stats.get("kind") in ("pearson", "spearman") and eval_stats.get("rows"):
        rows = as_rows(eval_stats["kind"], eval_stats["rows"])
        spread = float(np.std(rows[:, 1]))
        return None if spread == 0.0 else bool(float(np.std(rows[:, 0])) / spread < COLLAPSE_SD_RATIO)
    if not isinstance(share, dict) or share.get("label_share") is None or share["label_share"] >= 1.0:
        return None
    return bool((share["share"] - share["label_share"]) / (1.0 - share["label_share"]) > COLLAPSE_EXCESS)


def majority_baseline(task, features, examples) -> float:
    """The headline of the trivial predictor on this evaluation subset (module docstring), in the raw scale."""
    if task.kind == "regression" or task.headline == "matthews_correlation" or task.kind == "token":
        return 0.0
    if task.kind == "causal_lm" and task.output != "choice":  # generated answers (squad_lm, gsm8k_lm): no answer, 0
        return 0.0
    if task.kind == "qa":
        if not getattr(task, "with_null", False):
            return 0.0
        unanswerable = [len(a["text"]) == 0 for a in examples["answers"]]
        return 100.0 * float(np.mean(unanswerable)) if unanswerable else 0.0
    labels = np.asarray(features["labels"])
    best = 0.0
    for label in range(task.num_labels):
        stats = _classification_rows(task.headline, np.full_like(labels, label), labels)
        best = max(best, metric_from_stats(stats["kind"], stats["rows"]))
    return best


def failed_to_learn(headline: Any, baseline: Any) -> bool:
    """NaN (or missing) headline, or one at or below the trivial baseline."""
    if not isinstance(headline, (int, float)) or isinstance(headline, bool) or not math.isfinite(headline):
        return True
    return baseline is not None and headline <= baseline + 1e-12


__all__ = [
    "STAT_KINDS",
    "as_rows",
    "collapsed",
    "example_stats",
    "failed_to_learn",
    "index_weights",
    "majority_baseline",
    "metric_from_stats",
    "metric_from_stats_boot",
    "metric_from_weights",
    "prediction_share",
    "top_class_share",
]
