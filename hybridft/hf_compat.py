"""What differs between the transformers majors the library runs on: 4.57 (the pinned stack) and 5.

- transformers 5 removed ``TrainingArguments.warmup_ratio``: ``warmup_steps`` below 1 is the ratio (rounded up to
  steps as 4.x rounded the ratio), so a stage's warmup ratio goes to whichever field exists.
- transformers 5 removed ``logging_dir``: its TensorBoard callback reads ``TENSORBOARD_LOGGING_DIR`` when it is
  built, so `tensorboard_dir` sets it for the construction of one `Trainer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

from transformers import TrainingArguments

_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainingArguments))
TENSORBOARD_ENV = "TENSORBOARD_LOGGING_DIR"


def warmup_arguments(ratio: float) -> dict[str, float]:
    """The `TrainingArguments` keyword that warms up over ``ratio`` of the training steps (0 <= ratio < 1)."""
    return {"warmup_ratio": ratio} if "warmup_ratio" in _FIELDS else {"warmup_steps": ratio}


def warmup_ratio(args: TrainingArguments) -> float:
    """The warmup ratio of ``args``, on either major (a whole number of warmup steps is not a ratio: 0)."""
    if "warmup_ratio" in _FIELDS:
        return args.warmup_ratio
    return args.warmup_steps if args.warmup_steps < 1 else 0.0


def logging_dir_arguments(path: str) -> dict[str, str]:
    """``logging_dir`` where `TrainingArguments` has it (4.x); nothing on 5 (see `tensorboard_dir`)."""
    return {"logging_dir": path} if "logging_dir" in _FIELDS else {}


@contextlib.contextmanager
def tensorboard_dir(path: str | None):
    """On transformers 5, ``TENSORBOARD_LOGGING_DIR`` = ``path`` while a `Trainer` (its TensorBoard callback) is
    built; on 4.x, and without a path, nothing."""
    if path is None or "logging_dir" in _FIELDS:
        yield
        return
    before = os.environ.get(TENSORBOARD_ENV)
    os.environ[TENSORBOARD_ENV] = path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TENSORBOARD_ENV, None)
        else:
            os.environ[TENSORBOARD_ENV] = before


__all__ = ["logging_dir_arguments", "tensorboard_dir", "warmup_arguments", "warmup_ratio"]
