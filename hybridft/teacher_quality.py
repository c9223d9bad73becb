"""How good the two teachers are, recorded beside every run that builds them.

A hybrid run is only as good as its teachers: a θ_pre that predicts one class pulls the student towards a constant
distribution, and WiSE-FT's α then mixes towards a useless head. So every run whose method builds teachers carries

    teacher_scores = {"pre":  {"dev": …, "eval": …, "majority": …, "majority_eval": …, "dev_source": …},
                      "fine": {…} or None}
    weak_teacher = θ_pre's dev score ≤ its majority baseline on dev

as headline values in the record's own units. ``dev`` is the score on the run's dev split (``dev_source: "dev"``);
without one it is θ_pre's cross-validated score from the probe (``"cv:k"``, the probe's own metric: accuracy, or
Pearson for regression, or the exact start/end position for QA), and θ_fine's dev score is None. ``majority`` is
the trivial baseline on the split ``dev`` was measured on, ``majority_eval`` on the evaluation split.

The bench scores with the task's own metrics (`bench.teacher_scores`). `hybridft.HybridTrainer` has no task
registry: it scores with the user's ``compute_metrics`` when given (else accuracy, or Pearson for regression) on its
``eval_dataset``, and takes dev from the probe's cross-validation (`trainer_teacher_scores`). A weak θ_pre is logged
as a warning through `logging`.
"""

from __future__ import annotations

import logging
import math
import tempfile
from typing import Any

import numpy as np
from transformers import Trainer, TrainingArguments

logger = logging.getLogger("hybridft")


def is_weak(pre: dict | None) -> bool | None:
    """θ_pre at or below its majority baseline on dev (None when either is unknown)."""
    if not pre or pre.get("dev") is None or pre.get("majority") is None:
        return None
    dev, majority = pre["dev"], pre["majority"]
    if not (math.isfinite(dev) and math.isfinite(majority)):
        return None
    return bool(dev <= majority)


def warn_if_weak(scores: dict, where: str) -> bool | None:
    weak = is_weak(scores.get("pre"))
    if weak:
        pre = scores["pre"]
        logger.warning("%s: θ_pre (the linear probe) scores %.4f on %s, at or below the majority baseline %.4f: the "
                       "pretrained teacher predicts no better than a constant, so its KL term pulls towards it",
                       where, pre["dev"], pre["dev_source"], pre["majority"])  # fmt: skip
    return weak


# ---------------------------------------------------------------------------------------------------------------
# HybridTrainer


def _accuracy(kind: str, predictions, label_ids) -> float | None:
    """Accuracy (Pearson for regression; exact start and end for QA) of raw predictions against the labels."""
    if label_ids is None:
        return None
    if kind == "regression":
        pred = np.asarray(predictions).reshape(-1)
        gold = np.asarray(label_ids, dtype=float).reshape(-1)
        if pred.std() == 0 or gold.std() == 0:
            return 0.0
        return float(np.corrcoef(pred, gold)[0, 1])
    if kind == "qa":
        starts, ends = (np.asarray(p).argmax(axis=-1) for p in predictions)
        gold_start, gold_end = (np.asarray(x) for x in label_ids)
        return float(((starts == gold_start) & (ends == gold_end)).mean())
    pred = np.asarray(predictions).argmax(axis=-1)
    gold = np.asarray(label_ids)
    keep = gold != -100
    return float((pred[keep] == gold[keep]).mean()) if keep.any() else None


def _trainer_eval(model, kind: str, eval_dataset, collator, compute_metrics, args) -> dict[str, Any]:
    """One teacher on ``eval_dataset`` through a plain `Trainer`: its loss, accuracy and ``compute_metrics``."""
    with tempfile.TemporaryDirectory(prefix="hybridft-teacher-eval-") as tmp:
        eval_args = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=args.per_device_eval_batch_size,
                                      report_to=[], disable_tqdm=args.disable_tqdm, use_cpu=args.use_cpu)  # fmt: skip
        trainer = Trainer(model=model, args=eval_args, data_collator=collator, compute_metrics=compute_metrics)
        output = trainer.predict(eval_dataset)
    metrics = {k.removeprefix("test_"): float(v) for k, v in output.metrics.items()
               if isinstance(v, (int, float)) and not k.endswith(("_runtime", "_per_second"))}  # fmt: skip
    accuracy = _accuracy(kind, output.predictions, output.label_ids)
    own = args.metric_for_best_model
    if compute_metrics is not None and own:
        headline = metrics.get(own.removeprefix("eval_"))
    elif compute_metrics is not None:
        headline = next((v for k, v in metrics.items() if k != "loss"), accuracy)
    else:
        headline = accuracy
    model.to("cpu")
    return {"eval": headline, "eval_metrics": metrics}


def trainer_teacher_scores(pre, fine, probe, kind: str, train, eval_dataset, collator, compute_metrics,
                           args) -> dict[str, Any]:  # fmt: skip
    """`HybridTrainer`'s ``teacher_scores``: dev is θ_pre's cross-validated probe score against the trivial baseline
    of the same folds; eval (when ``eval_dataset`` is given) each teacher's ``compute_metrics`` headline (the
    ``metric_for_best_model``, else its first metric), or accuracy / Pearson without one. Logs a weak θ_pre."""
    record = None if probe is None else probe.record
    scores: dict[str, Any] = {}
    for name, model in (("pre", pre), ("fine", fine)):
        entry: dict[str, Any] = {"dev": None, "majority": None, "dev_source": None, "eval": None}
        if name == "pre" and record is not None:
            entry |= {"dev": record["held_out_score"], "majority": record.get("majority"),
                      "dev_source": record["selection"]}  # fmt: skip
        if eval_dataset is not None:
            entry |= _trainer_eval(model, kind, eval_dataset, collator, compute_metrics, args)
        scores[name] = entry
    warn_if_weak(scores, "HybridTrainer")
    return scores
