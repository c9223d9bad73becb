"""Extractive QA: SQuAD v1.1 (hub ``rajpurkar/squad``), SQuAD v2.0 (``rajpurkar/squad_v2``; unanswerable questions
train towards CLS and decode to "" when the null score wins) and the offline protocol ``squad_devsplit``.

Preprocessing follows the transformers question-answering example: the question (left-stripped) and the context
go through the fast tokenizer with ``truncation="only_second"``, ``stride`` and ``return_overflowing_tokens``, so a
long context becomes several windows. A question longer than ``max_length - stride - 4`` tokens is clipped to that
length so every window keeps more than ``stride`` context tokens (the tokenizer needs that). Each window's
``start_positions``/``end_positions`` mark the first gold answer's tokens, or the CLS token (index 0) when the answer
is not entirely inside the window. Evaluation features also keep ``example_id`` and ``offset_mapping`` (None outside
the context) for span decoding (squad_decode.py).

``squad_devsplit`` (offline protocol, never comparable with official SQuAD numbers): the SQuAD v1.1 *validation*
articles, split by title. Sort the distinct titles (Python string order); every 5th title (sorted positions 4, 9,
14, ...) goes to the evaluation part, the rest to the training part. On v1.1 dev (48 articles) that is 39 train
articles / 9 eval articles. Its splits are called "train" and "validation".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from transformers import DataCollatorWithPadding

from bench.tasks.base import DropColumnsCollator, Task, check_max_length, check_rows, check_tokenizer
from bench.tasks.squad_decode import decode_answers, decode_answers_with_null

if TYPE_CHECKING:
    from datasets import Dataset

DEVSPLIT_EVERY = 5  # every DEVSPLIT_EVERY-th sorted title is an evaluation article
DEVSPLIT_SOURCE_SPLIT = "validation"


def clip_questions(questions: list[str], tokenizer, max_tokens: int) -> list[str]:
    """Left-strip questions and cut any longer than ``max_tokens`` tokens at a token boundary."""
    questions = [q.lstrip() for q in questions]
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    clipped = []
    for question, offsets in zip(questions, encoded["offset_mapping"], strict=True):
        clipped.append(question if len(offsets) <= max_tokens else question[: offsets[max_tokens - 1][1]])
    return clipped


def answer_token_span(offsets, sequence_ids, answers: dict, cls_index: int) -> tuple[int, int]:
    """Token positions of the first gold answer in this window, or (cls, cls) when it is not fully inside."""
    if len(answers["answer_start"]) == 0:
        return cls_index, cls_index
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    context = [i for i, s in enumerate(sequence_ids) if s == 1]
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls_index, cls_index
    start = first
    while start + 1 <= last and offsets[start + 1][0] <= start_char:
        start += 1
    end = last
    while end - 1 >= first and offsets[end - 1][1] >= end_char:
        end -= 1
    return start, end


@dataclass(frozen=True, kw_only=True)
class QATask(Task):
    """Extractive question answering over ``question``/``context`` with SQuAD-format ``answers``."""

    n_best: int = 20
    with_null: bool = False  # SQuAD v2.0: unanswerable questions, null answer at CLS
    max_answer_length: int = 30

    model_auto_class: ClassVar[str] = "AutoModelForQuestionAnswering"

    def model_kwargs(self) -> dict[str, Any]:
        """Two outputs per token (start, end); no label maps, since positions are not classes."""
        return {"num_labels": 2}

    def preprocess(
        self, dataset: Dataset, tokenizer, *, max_length: int = 128, train: bool, stride: int = 64
    ) -> Dataset:
        """Windows with stride; start/end token positions; eval keeps example_id and context-only offsets."""
        check_tokenizer(tokenizer, self.name)
        check_max_length(max_length, self.name)
        max_question = max_length - stride - 4
        if not isinstance(stride, int) or stride < 0 or max_question < 4:
            raise ValueError(
                f"task {self.name!r}: stride must be an int in [0, max_length - 8], got stride={stride!r} "
                f"with max_length={max_length}"
            )

        def tokenize(batch):
            encoded = tokenizer(
                clip_questions(batch["question"], tokenizer, max_question),
                batch["context"],
                truncation="only_second",
                max_length=max_length,
                stride=stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
            sample_map = encoded.pop("overflow_to_sample_mapping")
            starts, ends, example_ids, offset_mapping = [], [], [], []
            for i, offsets in enumerate(encoded["offset_mapping"]):
                sequence_ids = encoded.sequence_ids(i)
                cls_index = encoded["input_ids"][i].index(tokenizer.cls_token_id)
                start, end = answer_token_span(offsets, sequence_ids, batch["answers"][sample_map[i]], cls_index)
                starts.append(start)
                ends.append(end)
                example_ids.append(batch["id"][sample_map[i]])
                offset_mapping.append([o if s == 1 else None for o, s in zip(offsets, sequence_ids, strict=True)])
            encoded["start_positions"], encoded["end_positions"] = starts, ends
            if train:
                del encoded["offset_mapping"]
            else:
                encoded["example_id"], encoded["offset_mapping"] = example_ids, offset_mapping
            return encoded

        return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc=f"tokenizing {self.name}")

    def collator(self, tokenizer):
        return DropColumnsCollator(DataCollatorWithPadding(tokenizer), drop=("example_id", "offset_mapping"))

    def decode(self, predictions: Any, features: Dataset, examples: Dataset) -> dict:
        """Per example id: the answer text (v1.1), or (text or "", no-answer probability) when ``with_null``."""
        if not isinstance(predictions, (tuple, list)) or len(predictions) != 2:
            raise ValueError(f"task {self.name!r}: predictions must be a (start_logits, end_logits) pair")
        start_logits, end_logits = (
            p.detach().float().cpu().numpy() if hasattr(p, "detach") else p for p in predictions
        )
        check_rows(start_logits, len(features), self.name)
        for column in ("example_id", "offset_mapping"):
            if column not in features.column_names:
                raise ValueError(f"task {self.name!r}: features lack {column!r}; preprocess them with train=False")
        decode = decode_answers_with_null if self.with_null else decode_answers
        return decode(
            start_logits, end_logits, features, examples, n_best=self.n_best, max_answer_length=self.max_answer_length
        )

    def compute_metrics(self, predictions: Any, features: Dataset, examples: Dataset) -> dict[str, float]:
        """n-best span decoding over all windows, then the official SQuAD EM/F1 (0-100; v2.0 keys for squad_v2)."""
        answers = self.decode(predictions, features, examples)
        if self.with_null:
            predicted = [
                {"id": i, "prediction_text": text, "no_answer_probability": probability}
                for i, (text, probability) in answers.items()
            ]
        else:
            predicted = [{"id": i, "prediction_text": text} for i, text in answers.items()]
        references = [{"id": i, "answers": a} for i, a in zip(examples["id"], examples["answers"], strict=True)]
        scores = self.metric().compute(predictions=predicted, references=references)
        return {key: float(value) for key, value in scores.items()}


def devsplit_titles(titles) -> tuple[frozenset[str], frozenset[str]]:
    """(train titles, eval titles): sorted distinct titles, every DEVSPLIT_EVERY-th one (positions 4, 9, ...) eval."""
    ordered = sorted(set(titles))
    evaluation = frozenset(t for i, t in enumerate(ordered) if i % DEVSPLIT_EVERY == DEVSPLIT_EVERY - 1)
    return frozenset(ordered) - evaluation, evaluation


@dataclass(frozen=True, kw_only=True)
class SquadDevsplitTask(QATask):
    """SQuAD v1.1 validation articles split by title into "train" and "validation" (see the module docstring)."""

    def local_path(self, data_dir: Path, split: str) -> Path:
        self._check_split(split)
        return Path(data_dir) / self.local_dir / f"{DEVSPLIT_SOURCE_SPLIT}.parquet"

    def _check_split(self, split: str) -> None:
        if split not in (self.train_split, self.eval_split):
            raise ValueError(
                f"task {self.name!r} has splits {self.train_split!r} and {self.eval_split!r} only "
                f"(both cut from SQuAD v1.1 validation), got {split!r}"
            )

    def load(self, split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
        self._check_split(split)
        source = super().load(DEVSPLIT_SOURCE_SPLIT, data_dir)
        train_titles, eval_titles = devsplit_titles(source["title"])
        keep = train_titles if split == self.train_split else eval_titles
        return source.select([i for i, title in enumerate(source["title"]) if title in keep])


# What every SQuAD-style task shares: start/end logits per position, the squad metric (already 0-100), F1 headline.
_SQUAD_COMMON = dict(
    kind="qa",
    num_labels=2,
    label_names=("start", "end"),
    hub_config=None,
    headline="f1",
    metric_name="squad",
    metric_scale=1.0,
)
SQUAD = QATask(name="squad", hub_id="rajpurkar/squad", local_dir="squad", **_SQUAD_COMMON)
SQUAD_DEVSPLIT = SquadDevsplitTask(name="squad_devsplit", hub_id="rajpurkar/squad", local_dir="squad", **_SQUAD_COMMON)
SQUAD_V2 = QATask(
    name="squad_v2",
    hub_id="rajpurkar/squad_v2",
    local_dir="squad_v2",
    metric_config="squad_v2",
    with_null=True,
    **_SQUAD_COMMON,
)
