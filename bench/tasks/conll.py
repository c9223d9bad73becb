"""CoNLL-2003 English NER (hub ``eriktks/conll2003``): word-level IOB2 tags, first-subword labelling.

Training labels sit on the first subword of each word; every other position (special tokens, later subwords) is
-100. The features also carry ``kd_mask``: 1 on each word's first subword, 0 elsewhere, computed from the word ids
rather than the labels, so that unlabelled features (every label -100) keep it. Distillation makes one row per word
from it (`hybridft.distill.TokenRows`); the task's collator drops it, so models never see it. Evaluation maps the
first-subword predictions back to one tag per word. A word cut off by ``max_length`` gets the prediction "O", and
the references are always the full sentence's gold tags, so truncation costs recall instead of silently shrinking
the test set. Scoring: entity-level precision / recall / F1 with seqeval's default mode, which reproduces conlleval
(the official CoNLL-2003 scorer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from transformers import DataCollatorForTokenClassification

from bench.tasks.base import DropColumnsCollator, Task, as_numpy, check_max_length, check_rows, check_tokenizer

if TYPE_CHECKING:
    from datasets import Dataset

NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
KD_MASK_COLUMN = "kd_mask"  # = hybridft.distill.TokenRows.mask_column


def first_subword_mask(word_ids: list[int | None]) -> list[int]:
    """1 on the first subword of each word, 0 on special tokens and on the word's other subwords."""
    mask, previous = [], None
    for word in word_ids:
        mask.append(int(word is not None and word != previous))
        previous = word
    return mask


def first_subword_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """The word's label on its first subword, -100 on special tokens and on the word's other subwords."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(-100 if word is None or word == previous else int(word_labels[word]))
        previous = word
    return labels


def word_predictions(token_predictions: np.ndarray, word_ids: list[int | None], num_words: int) -> list[int]:
    """One prediction per word, from its first subword; words cut off by truncation get -1 (caller maps to O)."""
    words = [-1] * num_words
    previous = None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            words[word] = int(token_predictions[position])
        previous = word
    return words


@dataclass(frozen=True, kw_only=True)
class TokenTask(Task):
    """Token classification over pre-split words (``tokens``) with integer tags (``tags_column``)."""

    tags_column: str = "ner_tags"

    model_auto_class: ClassVar[str] = "AutoModelForTokenClassification"

    def preprocess(
        self, dataset: Dataset, tokenizer, *, max_length: int = 128, train: bool, stride: int = 64
    ) -> Dataset:
        """Tokenize the words; label first subwords and mark them in ``kd_mask``; keep ``word_ids`` for evaluation."""
        check_tokenizer(tokenizer, self.name)
        check_max_length(max_length, self.name)

        def tokenize(batch):
            encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
            word_ids = [encoded.word_ids(i) for i in range(len(batch["tokens"]))]
            encoded["labels"] = [
                first_subword_labels(ids, tags) for ids, tags in zip(word_ids, batch[self.tags_column], strict=True)
            ]
            encoded[KD_MASK_COLUMN] = [first_subword_mask(ids) for ids in word_ids]
            if not train:
                encoded["word_ids"] = word_ids
            return encoded

        return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc=f"tokenizing {self.name}")

    def collator(self, tokenizer):
        return DropColumnsCollator(DataCollatorForTokenClassification(tokenizer), drop=("word_ids", KD_MASK_COLUMN))

    def word_tags(self, predictions: Any, features: Dataset, examples: Dataset) -> list[list[str]]:
        """Word-level predicted tag names for every example (features and examples are row-aligned)."""
        logits = as_numpy(predictions)
        check_rows(logits, len(features), self.name)
        check_rows(examples, len(features), self.name)
        if logits.ndim != 3 or logits.shape[2] != self.num_labels:
            raise ValueError(f"task {self.name!r}: logits must be (n, seq_len, {self.num_labels}), got {logits.shape}")
        if "word_ids" not in features.column_names:
            raise ValueError(f"task {self.name!r}: features lack 'word_ids'; preprocess them with train=False")
        token_predictions = logits.argmax(axis=-1)
        tags = []
        for row, word_ids, words in zip(token_predictions, features["word_ids"], examples["tokens"], strict=True):
            if len(word_ids) > len(row):
                raise ValueError(f"task {self.name!r}: logits seq_len {len(row)} < feature length {len(word_ids)}")
            ids = word_predictions(row, word_ids, len(words))
            tags.append([self.label_names[i] if i >= 0 else "O" for i in ids])
        return tags

    def compute_metrics(self, predictions: Any, features: Dataset, examples: Dataset) -> dict[str, float]:
        """Entity-level seqeval (conlleval semantics) on word-level tags: precision, recall, f1, accuracy, per type."""
        predicted = self.word_tags(predictions, features, examples)
        references = [[self.label_names[i] for i in tags] for tags in examples[self.tags_column]]
        scores = self.metric().compute(predictions=predicted, references=references, zero_division=0)
        result = {
            key.removeprefix("overall_"): float(value) for key, value in scores.items() if key.startswith("overall_")
        }
        for entity, values in scores.items():
            if isinstance(values, dict):
                result.update({f"{entity}_{name}": float(value) for name, value in values.items()})
        return result


CONLL2003 = TokenTask(
    name="conll2003",
    kind="token",
    num_labels=len(NER_TAGS),
    label_names=NER_TAGS,
    hub_id="eriktks/conll2003",
    hub_config=None,
    local_dir="conll2003",
    headline="f1",
    metric_name="seqeval",
)
