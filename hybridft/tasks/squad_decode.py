"""SQuAD span decoding: start/end logits over every window of an example → the answer text from the context.

For each window, the ``n_best`` highest start and end logits among *context* tokens are paired; a pair is a
candidate when end >= start and the span is at most ``max_answer_length`` tokens. Its score is
start_logit + end_logit, and the example's answer is the best candidate over all its windows, cut from the
context with the token offsets. Restricting the top-n to context tokens first (instead of filtering question and
padding tokens afterwards, as the transformers example does) can only keep more valid candidates.
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


def decode_answers(
    start_logits, end_logits, features: Dataset, examples: Dataset, *, n_best: int = 20, max_answer_length: int = 30
) -> dict[str, str]:
    """The predicted answer text of every example (by id); "" when no window has a valid span."""
    if n_best < 1 or max_answer_length < 1:
        raise ValueError(f"n_best and max_answer_length must be >= 1, got {n_best}, {max_answer_length}")
    start_logits, end_logits = np.asarray(start_logits, np.float64), np.asarray(end_logits, np.float64)
    if start_logits.shape != end_logits.shape or start_logits.ndim != 2 or len(start_logits) != len(features):
        raise ValueError(
            f"start/end logits must both be (n_features={len(features)}, seq_len), got "
            f"{start_logits.shape} and {end_logits.shape}"
        )
    columns = features.select_columns(["example_id", "offset_mapping"])[:]  # one read, not one per row
    offsets = columns["offset_mapping"]
    windows = defaultdict(list)
    for row, example_id in enumerate(columns["example_id"]):
        windows[example_id].append(row)
    answers = {}
    examples = examples.select_columns(["id", "context"])[:]
    for example_id, context in zip(examples["id"], examples["context"], strict=True):
        if example_id not in windows:
            raise ValueError(f"example {example_id!r} has no feature rows: features and examples do not match")
        best = None
        for row in windows[example_id]:
            mask = np.array([o is not None for o in offsets[row]])
            if len(mask) > start_logits.shape[1]:
                raise ValueError(f"logits seq_len {start_logits.shape[1]} < feature length {len(mask)}")
            found = best_span_in_window(
                start_logits[row], end_logits[row], mask, n_best=n_best, max_answer_length=max_answer_length
            )
            if found is not None and (best is None or found[0] > best[0]):
                best = (found[0], offsets[row][found[1]][0], offsets[row][found[2]][1])
        answers[example_id] = "" if best is None else context[best[1] : best[2]]
    return answers
