"""Scoring a model on a run's data: predictions, the task's metrics and the per-example statistics of a record
(`bench.scoring`), on the evaluation split, the dev split or a shift set. `bench.experiment` and
`bench.teacher_scores` score through here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.scoring import collapsed, example_stats, failed_to_learn, majority_baseline, prediction_share
from bench.shift import entity_metrics
from hybridft.fitting import predict, to_numpy_predictions

if TYPE_CHECKING:
    from bench.experiment import PreparedData, PreparedShift, RunConfig


def model_predictions(model, task, tokenizer, features, cfg: RunConfig, work_dir: Path, progress: bool):
    """Raw outputs of ``model`` on prepared features, row-aligned with them: the task's own ``predict_outputs``
    when it has one (causal_lm: label-word log-likelihoods or generated answers), else the Trainer's, as numpy."""
    own = getattr(task, "predict_outputs", None)
    if callable(own):
        return own(model, features, tokenizer, batch_size=cfg.eval_batch_size, progress=progress)

    return to_numpy_predictions(
        predict(
            model,
            features,
            task.collator(tokenizer),
            batch_size=cfg.eval_batch_size,
            output_dir=work_dir / "eval",
            progress=progress,
        )
    )


def stats_fields(task, predictions, features, examples, **stats_args) -> dict[str, Any]:
    """A scored set's per-example fields in a record: ``eval_stats`` (`bench.scoring.example_stats`, which takes
    ``stats_args``), for a classifier ``prediction_share``, and ``collapsed`` (`bench.scoring.collapsed`; None
    where it is not judged)."""
    fields = {"eval_stats": example_stats(task, predictions, features, examples, **stats_args)}
    share = prediction_share(task, predictions, features)
    if share is not None:
        fields["prediction_share"] = share
    fields["collapsed"] = collapsed(fields["eval_stats"], share)
    return fields


def score(model, task, tokenizer, features, examples, cfg: RunConfig, work_dir: Path, progress: bool, *,
          with_stats: bool = False):  # fmt: skip
    """The task's metrics of ``model`` on prepared features (and, ``with_stats``, the per-example fields,
    `stats_fields`)."""
    predictions = model_predictions(model, task, tokenizer, features, cfg, work_dir, progress)
    metrics = {key: float(value) for key, value in task.compute_metrics(predictions, features, examples).items()}
    if not with_stats:
        return metrics
    return metrics, stats_fields(task, predictions, features, examples)


def score_shift(model, data: PreparedData, prepared: PreparedShift, cfg: RunConfig, work_dir: Path,
                progress: bool, *, with_stats: bool = True) -> dict[str, Any]:  # fmt: skip
    """One shift set's entry of a run record: metrics, headline, trivial baseline, failed_to_learn and (``with_stats``)
    the per-example fields, `stats_fields`."""
    task, entry = data.task, prepared.shift
    predictions = model_predictions(model, task, data.tokenizer, prepared.features, cfg, work_dir, progress)
    metrics = task.compute_metrics(predictions, prepared.features, prepared.examples)
    types = entry.entity_types
    if types:
        predicted = task.word_tags(predictions, prepared.features, prepared.examples)
        gold = [[task.label_names[i] for i in tags] for tags in prepared.examples[task.tags_column]]
        metrics |= entity_metrics(task, predicted, gold, types)
    metrics = {key: float(value) for key, value in metrics.items()}
    headline_key = entry.headline_for(task)
    headline = metrics.get(headline_key, float("nan"))
    baseline = majority_baseline(task, prepared.features, prepared.examples)
    out = {
        "role": entry.role,
        "metrics": metrics,
        "headline_metric": headline_key,
        "headline": headline,
        "majority_baseline": baseline,
        "failed_to_learn": failed_to_learn(headline, baseline),
        "subset": prepared.subset,
    }
    if with_stats:
        out |= stats_fields(task, predictions, prepared.features, prepared.examples, headline=headline_key,
                            entity_types=types)  # fmt: skip
    return out


def evaluate(model, data: PreparedData, cfg: RunConfig, work_dir: Path, progress: bool) -> dict[str, float]:
    """The task's metrics of ``model`` on the prepared (main) evaluation split."""
    return score(model, data.task, data.tokenizer, data.eval_features, data.eval_examples, cfg, work_dir, progress)


__all__ = ["evaluate", "model_predictions", "score", "score_shift", "stats_fields"]
