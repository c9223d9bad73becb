"""The kinds of task the library knows, and what it needs to know of each (a leaf: no imports of the project).

A task kind decides the training rows of the distillation loss (`hybridft.distill.rows_for`), the default
collator and the linear probe's head. The benchmark's task registry (`bench.tasks`) gives every task one of these
kinds; `HybridTrainingArguments.task_type` takes one.
"""

from __future__ import annotations

KINDS = ("classification", "regression", "token", "qa", "causal_lm")


def qa_stride(max_length: int) -> int:
    """Overlap of QA windows: half the window, at most 128 tokens (run_qa's doc_stride 128 at max length 384)."""
    return min(128, max_length // 2)


__all__ = ["KINDS", "qa_stride"]
