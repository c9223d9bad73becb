"""Task registry: every benchmark task by name (GLUE, SQuAD v1.1 and v2.0, CoNLL-2003, the offline squad_devsplit, and
the causal-LM tasks sst2_lm, squad_lm and gsm8k_lm).

    from bench.tasks import get_task
    task = get_task("sst2")
    train = task.preprocess(task.load("train"), tokenizer, train=True)

See base.Task for the contract every task follows.
"""

from __future__ import annotations

import os

from bench.data import resolve_data_dir
from bench.tasks.base import Task
from bench.tasks.causal_lm import SQUAD_LM, SST2_LM
from bench.tasks.conll import CONLL2003
from bench.tasks.glue import GLUE_TASKS
from bench.tasks.math_lm import GSM8K_LM
from bench.tasks.squad import SQUAD, SQUAD_DEVSPLIT, SQUAD_V2

__all__ = ["Task", "get_task", "offline_task_names", "task_names"]

_REGISTRY: dict[str, Task] = {
    task.name: task for task in (*GLUE_TASKS, SQUAD, SQUAD_V2, CONLL2003, SQUAD_DEVSPLIT, SST2_LM, SQUAD_LM, GSM8K_LM)
}


def task_names() -> list[str]:
    """Every registered task name, in registry order (GLUE, squad, squad_v2, conll2003, squad_devsplit, sst2_lm,
    squad_lm, gsm8k_lm)."""
    return list(_REGISTRY)


def get_task(name: str) -> Task:
    """The task called ``name``; ValueError naming it and listing the known tasks otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(_REGISTRY)}") from None


def offline_task_names(data_dir: str | os.PathLike | None) -> list[str]:
    """Tasks whose train split and main evaluation split both exist in the local folder ``data_dir``.

    ``None`` resolves like Task.load does ($HYBRIDFT_DATA_DIR, else the hub, where every task is available).
    """
    root = resolve_data_dir(data_dir)
    if root is None:
        return task_names()
    return [name for name, task in _REGISTRY.items() if task.has_offline(root)]
