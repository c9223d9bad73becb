"""SQuAD span decoding: start/end logits over every window of an example → the answer text from the context.

For each window, the ``n_best`` highest start and end logits among *context* tokens are paired; a pair is a
candidate when end >= start and the span is at most ``max_answer_length`` tokens. Its score is
start_logit + end_logit, and the example's answer is the best candidate over all its windows, cut from the
context with the token offsets. Restricting the top-n to context tokens first (instead of filtering question and
padding tokens afterwards, as the transformers example does) can only keep more valid candidates.

SQuAD v2.0 (``with_null=True``): the no-answer score of a window is start_logit + end_logit at position 0 (the CLS
token; inputs are right-padded), and the example's null score is the minimum over its windows (as in the
transformers example). The answer is "" when the null score beats the best span, and the no-answer probability
handed to the metric is sigmoid(null score - best span score) (0.5 at the decision boundary; 1 when no span is
valid), so the official best-threshold sweep has a meaningful order.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasets import Dataset


def best_span_in_window(
    start_logits: np.ndarray, end_logits: np.ndarray, context_mask: np.ndarray, *, n_best: int, max_answer_length: int
) -> tuple[float, int, int] | None:
    """(score, start, end) of the best valid span in one window, or None when the window has no valid span."""
    length = len(context_mask)
    start = np.where(context_mask, start_logits[:length], -np.inf)
    end = np.where(context_mask, end_logits[:length], -np.inf)
    top_start = np.argsort(-start, kind="stable")[:n_best]
    top_end = np.argsort(-end, kind="stable")[:n_best]
    scores = start[top_start][:, None] + end[top_end][None, :]
    width = top_end[None, :] - top_start[:, None] + 1
    valid = (width >= 1) & (width <= max_answer_length) & np.isfinite(scores)
    if not valid.any():
        return None
    scores = np.where(valid, scores, -np.inf)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[i, j]), int(top_start[i]), int(top_end[j])


def _check_logits(start_logits, end_logits, n_features: int, n_best: int, max_answer_length: int):
    if n_best < 1 or max_answer_length < 1:
        raise ValueError(f"n_best and max_answer_length must be >= 1, got {n_best}, {max_answer_length}")
    start_logits, end_logits = np.asarray(start_logits, np.float64), np.asarray(end_logits, np.float64)
    if start_logits.shape != end_logits.shape or start_logits.ndim != 2 or len(start_logits) != n_features:
        raise ValueError(
            f"start/end logits must both be (n_features={n_features}, seq_len), got "
            f"{start_logits.shape} and {end_logits.shape}"
        )
    return start_logits, end_logits


def best_spans(
    start_logits, end_logits, features: Dataset, examples: Dataset, *, n_best: int = 20, max_answer_length: int = 30
):
    """Per example: (id, context, best span as (score, start_char, end_char) or None, min null score over windows)."""
    start_logits, end_logits = _check_logits(start_logits, end_logits, len(features), n_best, max_answer_length)
    columns = features.select_columns(["example_id", "offset_mapping"])[:]  # one read, not one per row
    offsets = columns["offset_mapping"]
    windows = defaultdict(list)
    for row, example_id in enumerate(columns["example_id"]):
        windows[example_id].append(row)
    examples = examples.select_columns(["id", "context"])[:]
    for example_id, context in zip(examples["id"], examples["context"], strict=True):
        if example_id not in windows:
            raise ValueError(f"example {example_id!r} has no feature rows: features and examples do not match")
        best, null = None, np.inf
        for row in windows[example_id]:
            mask = np.array([o is not None for o in offsets[row]])
            if len(mask) > start_logits.shape[1]:
                raise ValueError(f"logits seq_len {start_logits.shape[1]} < feature length {len(mask)}")
            null = min(null, float(start_logits[row, 0] + end_logits[row, 0]))
            found = best_span_in_window(
                start_logits[row], end_logits[row], mask, n_best=n_best, max_answer_length=max_answer_length
            )
            if found is not None and (best is None or found[0] > best[0]):
                best = (found[0], offsets[row][found[1]][0], offsets[row][found[2]][1])
        yield example_id, context, best, null


def decode_answers(
    start_logits, end_logits, features: Dataset, examples: Dataset, *, n_best: int = 20, max_answer_length: int = 30
) -> dict[str, str]:
    """SQuAD v1.1: the predicted answer text of every example (by id); "" when no window has a valid span."""
    spans = best_spans(start_logits, end_logits, features, examples, n_best=n_best, max_answer_length=max_answer_length)
    return {qid: "" if best is None else context[best[1] : best[2]] for qid, context, best, _ in spans}


def decode_answers_with_null(
    start_logits, end_logits, features: Dataset, examples: Dataset, *, n_best: int = 20, max_answer_length: int = 30
) -> dict[str, tuple[str, float]]:
    """SQuAD v2.0: (answer text or "" for no answer, no-answer probability) of every example (by id)."""
    answers = {}
    for qid, context, best, null in best_spans(
        start_logits, end_logits, features, examples, n_best=n_best, max_answer_length=max_answer_length
    ):
        if best is None:
            answers[qid] = ("", 1.0)
            continue
        margin = null - best[0]
        probability = 1.0 / (1.0 + np.exp(-margin)) if margin > -700 else 0.0
        answers[qid] = ("" if margin > 0 else context[best[1] : best[2]], float(probability))
    return answers
