"""Fixtures for the method tests: tiny random BERT runs on real slices of SST-2, STS-B, CoNLL-2003 and squad_devsplit.

One cache folder per test session, so the LP and LP-FT teacher stages are trained once per task and shared by every
method, as in the benchmark.
"""

from __future__ import annotations

import functools

import pytest

# One task per head kind (and regression), each with a slice small enough for a few CPU steps.
TASKS = ("sst2", "stsb", "conll2003", "squad_devsplit")
TRAIN_SIZE = {"sst2": 24, "stsb": 24, "conll2003": 16, "squad_devsplit": 6}
EVAL_SIZE = {"sst2": 16, "stsb": 16, "conll2003": 12, "squad_devsplit": 4}
MAX_LENGTH = 64


def tiny_run(task: str, method: str, data_dir, **overrides):
    from bench.experiment import RunConfig

    fields = dict(
        task=task,
        method=method,
        seed=3,
        model="tiny-bert",
        train_size=TRAIN_SIZE[task],
        eval_size=EVAL_SIZE[task],
        max_length=MAX_LENGTH,
        batch_size=8,
        eval_batch_size=16,
        data_dir=str(data_dir),
    )
    fields.update(overrides)
    return RunConfig(**fields)


@functools.lru_cache(maxsize=8)
def _prepared(task: str, data_dir: str):
    from bench.experiment import prepare_data

    return prepare_data(tiny_run(task, "plain", data_dir))


@pytest.fixture(scope="session")
def stage_cache(tmp_path_factory):
    """A cache folder shared by every test of the session (teacher stages, teacher logits)."""
    return tmp_path_factory.mktemp("stage_cache")


@pytest.fixture
def make_context(data_dir, stage_cache, tmp_path):
    """``make_context(task, method="plain", **run_overrides)`` → (TrainContext, PreparedData)."""

    def make(task: str, method: str = "plain", **overrides):
        from bench.experiment import train_context

        cfg = tiny_run(task, method, data_dir, **overrides)
        data = _prepared(task, str(data_dir))
        return train_context(cfg, data, tmp_path / "work", stage_cache, progress=False), data

    return make
