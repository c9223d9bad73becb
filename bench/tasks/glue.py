"""GLUE: sentence and sentence-pair classification, and STS-B regression (hub ``nyu-mll/glue``, config = task).

Headline metrics follow the LoRA paper's Table 2: Matthews correlation for CoLA, Pearson for STS-B, accuracy for
every other task (MRPC and QQP also report F1; STS-B also Spearman).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from transformers import DataCollatorWithPadding

from bench.tasks.base import DropColumnsCollator, Task, as_numpy, check_max_length, check_rows, check_tokenizer

if TYPE_CHECKING:
    from datasets import Dataset


@dataclass(frozen=True, kw_only=True)
class GlueTask(Task):
    """A GLUE task: one or two text columns, an int label (or a float score for regression)."""

    text_keys: tuple[str, str | None]

    model_auto_class: ClassVar[str] = "AutoModelForSequenceClassification"

    def model_kwargs(self) -> dict[str, Any]:
        if self.kind == "regression":
            return {"num_labels": 1, "problem_type": "regression"}
        return super().model_kwargs()

    def preprocess(
        self, dataset: Dataset, tokenizer, *, max_length: int = 128, train: bool, stride: int = 64
    ) -> Dataset:
        """Tokenize (truncate, no padding) and rename the label to ``labels`` (float for regression)."""
        check_tokenizer(tokenizer, self.name)
        check_max_length(max_length, self.name)
        first, second = self.text_keys
        regression = self.kind == "regression"

        def tokenize(batch):
            encoded = tokenizer(batch[first], batch[second] if second else None, truncation=True, max_length=max_length)
            encoded["labels"] = [float(y) if regression else int(y) for y in batch["label"]]
            return encoded

        return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc=f"tokenizing {self.name}")

    def collator(self, tokenizer):
        return DropColumnsCollator(DataCollatorWithPadding(tokenizer), drop=())

    def compute_metrics(self, predictions: Any, features: Dataset, examples: Dataset) -> dict[str, float]:
        """argmax (or the single regression output) of the logits, scored by the GLUE metric for this task."""
        logits = as_numpy(predictions)
        check_rows(logits, len(features), self.name)
        references = np.asarray(features["labels"])
        if self.kind == "regression":
            if logits.ndim == 2 and logits.shape[1] != 1:
                raise ValueError(f"task {self.name!r}: regression logits must be (n, 1) or (n,), got {logits.shape}")
            predicted = logits.reshape(len(logits))
        else:
            if logits.ndim != 2 or logits.shape[1] != self.num_labels:
                raise ValueError(f"task {self.name!r}: logits must be (n, {self.num_labels}), got {logits.shape}")
            predicted = logits.argmax(axis=-1)
            if (references < 0).any():
                raise ValueError(
                    f"task {self.name!r}: the features carry no labels (label -1: an unlabelled test split)"
                )
        scores = self.metric().compute(predictions=predicted.tolist(), references=references.tolist())
        return {key: float(value) for key, value in scores.items()}


def _glue(
    name: str, labels: tuple[str, ...], text_keys: tuple[str, str | None], headline: str = "accuracy", **extra
) -> GlueTask:
    regression = not labels
    return GlueTask(
        name=name,
        kind="regression" if regression else "classification",
        num_labels=1 if regression else len(labels),
        label_names=labels,
        hub_id="nyu-mll/glue",
        hub_config=name,
        local_dir=f"glue/{name}",
        headline=headline,
        metric_name="glue",
        metric_config=name,
        text_keys=text_keys,
        **extra,
    )


GLUE_TASKS = (
    _glue("cola", ("unacceptable", "acceptable"), ("sentence", None), headline="matthews_correlation"),
    _glue("sst2", ("negative", "positive"), ("sentence", None)),
    _glue("mrpc", ("not_equivalent", "equivalent"), ("sentence1", "sentence2")),
    _glue("stsb", (), ("sentence1", "sentence2"), headline="pearson"),
    _glue("qqp", ("not_duplicate", "duplicate"), ("question1", "question2")),
    _glue(
        "mnli",
        ("entailment", "neutral", "contradiction"),
        ("premise", "hypothesis"),
        eval_split="validation_matched",
        extra_eval_splits=("validation_mismatched",),
    ),
    _glue("qnli", ("entailment", "not_entailment"), ("question", "sentence")),
    _glue("rte", ("entailment", "not_entailment"), ("sentence1", "sentence2")),
    _glue("wnli", ("not_entailment", "entailment"), ("sentence1", "sentence2")),
)
