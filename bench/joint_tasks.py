"""Multi-task joint training: one encoder shared by several classification tasks, one head per task.

`MultiTaskModel` holds one standard Hugging Face model per task (``hybridft.models.build_model``), whose encoders
(the ``base_model_prefix`` attribute) are one module object: every task's head sits on the same encoder parameters.
A batch carries a ``task_ids`` column (the task's index in `MultiTaskModel.tasks`); each row runs through its own
task's model and the logits come back in row order. `MultiTaskModel.task_model` copies one task's model out (encoder
and its head), a plain ``*ForSequenceClassification`` that the per-task scorer evaluates like any other.

Joint data (`joint_features`): for each task the training subset a single-task run of it trains on (the run's
config with the task replaced: same seed, train_size, dev_size, max_length; `bench.experiment.training_features`),
with its ``task_ids``, concatenated in the order of the task list, so every run of the same task list builds the same
set whichever of the tasks it evaluates.

Sampling is proportional: the joint features go to the normal `hybridft.fitting.fit` sampler (length-bucketed or
random) over their union, so each task appears in batches in proportion to its size, and a batch may mix tasks.
No per-task re-weighting or round-robin schedule is applied.

Only tasks of kind "classification" with one number of labels can share a model here (the routing forward scatters
every task's logits into one (N, C) tensor, and the hybrid loss takes one class count).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from datasets import concatenate_datasets
from transformers.modeling_outputs import SequenceClassifierOutput

from bench.splits import training_features
from bench.tasks import get_task
from hybridft.distill import IGNORE_INDEX, SequenceRows
from hybridft.models import build_model

TASK_COLUMN = "task_ids"


def check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    """``tasks`` as a tuple, or ValueError naming the first bad entry: fewer than two, a repeated or unknown name, or
    a task that is not classification with the first task's number of labels."""
    if isinstance(tasks, str) or not isinstance(tasks, Sequence):
        raise ValueError(f"tasks must be a list of at least two task names, got {tasks!r}")
    tasks = tuple(tasks)
    if len(tasks) < 2:
        raise ValueError(f"tasks must name at least two tasks to train jointly, got {list(tasks)}")
    if len(set(tasks)) != len(tasks):
        repeated = next(name for name in tasks if tasks.count(name) > 1)
        raise ValueError(f"tasks names {repeated!r} twice: {list(tasks)}")
    resolved = [get_task(name) for name in tasks]  # ValueError naming an unknown task and the known ones
    for task in resolved:
        if task.kind != "classification":
            raise ValueError(f"task {task.name!r} is a {task.kind} task with {task.num_labels} label(s); multi-task "
                             f"training takes classification tasks only (one shared logits tensor)")  # fmt: skip
    first = resolved[0]
    for task in resolved[1:]:
        if task.num_labels != first.num_labels:
            raise ValueError(f"task {task.name!r} is a classification task with {task.num_labels} labels and "
                             f"{first.name!r} one with {first.num_labels}: multi-task training needs tasks with one "
                             f"number of labels")  # fmt: skip
    return tasks


class MultiTaskModel(torch.nn.Module):
    """One HF sequence-classification model per task (``models``, in task-id order), sharing the first one's encoder.

    ``encoder`` (also ``base_model``) is that shared module; `hybridft.models.head_parameter_names` therefore
    names every task's head, so the stages' linear probe (`hybridft.teachers.probe_stage`) trains all heads on
    the frozen shared encoder.
    """

    base_model_prefix = "encoder"
    accepts_loss_kwargs = False  # the Trainer must not pass num_items_in_batch: the loss is a plain mean

    def __init__(self, models: Mapping[str, torch.nn.Module]):
        super().__init__()
        names = list(models)
        if not names:
            raise ValueError("MultiTaskModel needs at least one task model")
        first = models[names[0]]
        prefix = getattr(first, "base_model_prefix", "")
        if not prefix or not hasattr(first, prefix):
            raise ValueError(f"{type(first).__name__} has no encoder attribute base_model_prefix={prefix!r}")
        encoder = getattr(first, prefix)
        for name in names[1:]:
            model = models[name]
            if type(model) is not type(first):
                raise ValueError(f"task {name!r} has a {type(model).__name__}, task {names[0]!r} a "
                                 f"{type(first).__name__}: a shared encoder needs one architecture")  # fmt: skip
            setattr(model, prefix, encoder)
        self.encoder = encoder  # registered first, so the encoder's parameters are named encoder.*
        self.models = torch.nn.ModuleDict(models)
        self.tasks = tuple(names)
        self.config = first.config

    @classmethod
    def build(cls, spec: str, tasks: Sequence[str], seed: int) -> MultiTaskModel:
        """Fresh task models of ``spec`` (`hybridft.models.build_model`, each with ``seed``) on one shared encoder:
        the first task's, which is the encoder a single-task run of that task starts from."""
        return cls({name: build_model(spec, get_task(name), seed) for name in tasks})

    @property
    def base_model(self) -> torch.nn.Module:
        return self.encoder

    def task_index(self, name: str) -> int:
        """The task id of ``name``; ValueError naming it and the model's tasks otherwise."""
        if name not in self.tasks:
            raise ValueError(f"task {name!r} is not one of this model's tasks: {', '.join(self.tasks)}")
        return self.tasks.index(name)

    def task_model(self, name: str) -> torch.nn.Module:
        """A standalone deep copy of task ``name``'s HF model (the shared encoder and that task's head)."""
        return copy.deepcopy(self.models[self.tasks[self.task_index(name)]])

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, task_ids=None, **kw):
        """Each row through its task's model (``task_ids``: (N,) task indices); logits (N, C) in row order, and with
        ``labels`` the mean cross-entropy over the rows whose label is not -100 (as HF's own loss). Other keyword
        arguments go to every task model; only the logits and the loss come back."""
        if task_ids is None:
            raise ValueError(f"MultiTaskModel.forward needs {TASK_COLUMN} (one task index per row) to route the rows")
        if input_ids is None:
            raise ValueError("MultiTaskModel.forward needs input_ids")
        n = input_ids.shape[0]
        task_ids = torch.as_tensor(task_ids, device=input_ids.device).long().reshape(-1)
        if task_ids.numel() != n:
            raise ValueError(f"{TASK_COLUMN} has {task_ids.numel()} entries for {n} rows")
        present = torch.unique(task_ids).tolist()
        bad = [i for i in present if not 0 <= i < len(self.tasks)]
        if bad:
            raise ValueError(f"{TASK_COLUMN} holds {bad[0]}, not a task index of this model (0..{len(self.tasks) - 1})")
        kw = {**kw, "return_dict": True}
        logits = None
        for index in present:
            rows = (task_ids == index).nonzero(as_tuple=True)[0]
            inputs = {"input_ids": input_ids[rows]}
            if attention_mask is not None:
                inputs["attention_mask"] = attention_mask[rows]
            if token_type_ids is not None:
                inputs["token_type_ids"] = token_type_ids[rows]
            out = self.models[self.tasks[index]](**inputs, **kw).logits
            if logits is None:
                logits = out.new_zeros((n, out.shape[-1]))
            logits = logits.index_copy(0, rows, out)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(n, -1), labels.reshape(-1).long(), ignore_index=IGNORE_INDEX
            )

        return SequenceClassifierOutput(loss=loss, logits=logits)


class MultiTaskRows(SequenceRows):
    """`SequenceRows` for a teacher pass of a `MultiTaskModel` (`hybridft.distill.compute_teacher_logits`).

    The pass keeps the ``task_ids`` column as a teacher column but hands only the model inputs to
    ``teacher_forward``; the rows need the task ids to route, so ``teacher_forward`` defers the call and
    ``output_rows``, which gets the whole batch, runs it with the batch's ``task_ids``.
    """

    teacher_columns = (TASK_COLUMN,)

    def teacher_forward(self, model, inputs):
        return functools.partial(model, **inputs)

    def output_rows(self, outputs, batch):
        if TASK_COLUMN not in batch:
            raise KeyError(f"multi-task teacher rows need the {TASK_COLUMN!r} column in the batch")
        return super().output_rows(outputs(task_ids=batch[TASK_COLUMN]), batch)


@dataclass
class JointData:
    """The joint training features (``task_ids`` column included) and each task's data key, in task-id order."""

    tasks: tuple[str, ...]
    features: object  # datasets.Dataset
    data_keys: list[dict]

    def sizes(self) -> dict[str, int]:
        """Training rows per task."""
        ids = self.features[TASK_COLUMN]
        return {name: ids.count(i) for i, name in enumerate(self.tasks)}


def joint_features(ctx, tasks: Sequence[str]) -> JointData:
    """Every task's training features as a single-task run of it would train on (``ctx.run`` with the task
    replaced; the run's own task reuses ``ctx.train_features`` and ``ctx.data_key``), each with its task id in a
    ``task_ids`` column, concatenated in ``tasks`` order. ValueError unless the run's task is one of ``tasks``."""
    tasks = check_tasks(tasks)
    if ctx.task.name not in tasks:
        raise ValueError(f"the run's task {ctx.task.name!r} is not one of the multi-task tasks {list(tasks)}; add "
                         f"it to the method's tasks or run one of those")  # fmt: skip
    parts, keys = [], []
    for index, name in enumerate(tasks):
        if name == ctx.task.name:
            features, key = ctx.train_features, ctx.data_key
        else:
            cfg = dataclasses.replace(ctx.run, task=name, shifts=())  # shift sets belong to the run's own task
            features, _, key = training_features(cfg, get_task(name), ctx.tokenizer)
        if TASK_COLUMN in features.column_names:
            features = features.remove_columns(TASK_COLUMN)
        parts.append(features.add_column(TASK_COLUMN, [index] * len(features)))
        keys.append(key)
    columns = parts[0].column_names
    for name, part in zip(tasks, parts, strict=True):
        if sorted(part.column_names) != sorted(columns):
            raise ValueError(f"task {name!r} has feature columns {part.column_names}, task {tasks[0]!r} {columns}")
    parts = [part.select_columns(columns) for part in parts]
    parts = [part if part.features == parts[0].features else part.cast(parts[0].features) for part in parts]
    return JointData(tasks, concatenate_datasets(parts), keys)


__all__ = ["TASK_COLUMN", "JointData", "MultiTaskModel", "MultiTaskRows", "check_tasks", "joint_features"]
