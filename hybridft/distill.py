"""Dual-teacher distillation on the Hugging Face `Trainer`: loss rows per head kind, cached teacher logits, the trainer.

Rows. `hybrid_kd_loss` takes (rows, classes) logits, so each head kind turns model outputs into rows:

- sequence classification: one row per example (C = num_labels), label = the class;
- token classification: one row per word, at its first subword (the features' ``kd_mask`` column, built from the
  tokenizer's word ids at preprocessing); special tokens, later subwords and padding get no row, since no label or
  score reads them. Label = the word's tag. The mask column travels with the batch (`TokenRows.collator` pads it)
  and is taken out before the forward, so teacher and student rows are the same positions;
- QA: start and end logits are two row sets, each row one window over its positions (C = padded length), padding
  positions at −inf in student and teachers alike; label = the start / end position;
- regression (STS-B, one output): a softmax over one column is constant, so CE/KL mean nothing. The regression loss
  is ``ce_weight·MSE(m, y)`` over labelled rows + ``β·MSE(m, z_pre) + γ·MSE(m, z_fine)`` over all rows, with
  m = α·z_pre + (1−α)·z_student, in plain torch; the temperature does not apply. The label term matches the
  model's own MSE loss, so β = γ = 0 is ordinary regression fine-tuning.

Rows without a label (an extra unlabelled split) carry ignore_index (NaN for regression).

Teacher logits. Teachers are frozen, so their rows on the training features are computed once (before training,
counted by `teacher_forward_passes`) and stored in a flat (rows, K) tensor with per-feature offsets. Each training
feature carries its row number in an index column, so a batch fetches its teachers' rows whatever the sampler's
order or the DDP shard. The rows are cached on disk under ``cache_dir/teacher_logits/`` keyed by the teacher
weights' hash, the features' content hash and the preprocessing config, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch
from datasets import concatenate_datasets
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hybridft.batching import feature_lengths, longest_first
from hybridft.claims import claimed
from hybridft.lm_distill import LmRows
from hybridft.loss import hybrid_kd_loss
from hybridft.loss_checks import IGNORE_INDEX

INDEX_COLUMN = "kd_index"
_COUNTS = {"teacher_forward_passes": 0}


def teacher_forward_passes() -> int:
    """How many teacher forward passes (batches) this process has run; cached epochs add none."""
    return _COUNTS["teacher_forward_passes"]


# ---------------------------------------------------------------------------------------------------------------
# Rows per head kind


class SequenceRows:
    """One row per example: logits (B, C)."""

    label_columns = ("labels",)

    def output_rows(self, outputs, batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = outputs.logits
        return logits, torch.ones(logits.shape[0], dtype=torch.long)

    def loss_rows(self, outputs, batch, targets, pre_rows, fine_rows):
        labels = targets.get("labels")
        return outputs.logits, pre_rows, fine_rows, None if labels is None else labels.long()

    def unlabelled(self, example: dict) -> dict:
        return {"labels": IGNORE_INDEX}


class RegressionRows(SequenceRows):
    """One row per example with a single output; the loss is `regression_kd_loss`."""

    def loss_rows(self, outputs, batch, targets, pre_rows, fine_rows):
        labels = targets.get("labels")
        return outputs.logits[:, 0], pre_rows[:, 0], fine_rows[:, 0], None if labels is None else labels.float()

    def unlabelled(self, example: dict) -> dict:
        return {"labels": float("nan")}


class TokenRows:
    """One row per word: logits[kd_mask & attention_mask], (N, C), where ``kd_mask`` marks each word's first subword.

    ``kd_mask`` is a feature column (`bench.tasks.conll`), computed from the word ids and not from the labels, so
    unlabelled features (every label -100) still distil on their first subwords. It is in ``extra_columns``: the
    distillation keeps it through the Trainer's column filter, pads it with `collator` and takes it out of the batch
    before the forward; the task's own collator drops it, so plain training and prediction never see it.
    """

    label_columns = ("labels",)
    mask_column = "kd_mask"
    extra_columns = (mask_column,)

    class Collator:
        """Wraps a task collator: takes the mask column out before padding and returns it padded with 0."""

        def __init__(self, inner, column: str):
            self.inner, self.column = inner, column

        def __call__(self, features: list[dict]) -> dict:
            if not any(self.column in f for f in features):  # an evaluation batch: no distillation rows
                return self.inner(features)
            if any(self.column not in f for f in features):
                raise KeyError(f"token distillation needs the {self.column!r} column; preprocess with TokenTask")
            masks = [torch.as_tensor(f[self.column], dtype=torch.long) for f in features]
            batch = self.inner([{k: v for k, v in f.items() if k != self.column} for f in features])
            width = batch["input_ids"].shape[1]
            if any(m.numel() > width for m in masks):
                raise ValueError(f"{self.column!r} is longer than the padded input_ids ({width})")
            padded = torch.zeros(len(masks), width, dtype=torch.long)
            for row, mask in zip(padded, masks, strict=True):
                row[: mask.numel()] = mask
            batch[self.column] = padded
            return batch

    def collator(self, inner):
        return self.Collator(inner, self.mask_column)

    def mask(self, batch) -> torch.Tensor:
        if self.mask_column not in batch:
            raise KeyError(f"token rows need the {self.mask_column!r} column in the batch (see TokenRows.collator)")
        return batch[self.mask_column].bool() & batch["attention_mask"].bool()

    def output_rows(self, outputs, batch):
        mask = self.mask(batch)
        return outputs.logits[mask], mask.sum(dim=1).cpu()

    def loss_rows(self, outputs, batch, targets, pre_rows, fine_rows):
        mask = self.mask(batch)
        labels = targets.get("labels")
        return outputs.logits[mask], pre_rows, fine_rows, None if labels is None else labels[mask].long()

    def unlabelled(self, example: dict) -> dict:
        return {"labels": [IGNORE_INDEX] * len(example["input_ids"])}


class SpanRows:
    """QA: stored as (N_tokens, 2) [start, end] per real token; distilled as 2B rows over the padded positions."""

    label_columns = ("start_positions", "end_positions")

    def output_rows(self, outputs, batch):
        mask = batch["attention_mask"].bool()
        both = torch.stack([outputs.start_logits, outputs.end_logits], dim=-1)
        return both[mask], mask.sum(dim=1).cpu()

    def loss_rows(self, outputs, batch, targets, pre_rows, fine_rows):
        mask = batch["attention_mask"].bool()
        student = torch.cat([outputs.start_logits, outputs.end_logits]).masked_fill(~mask.repeat(2, 1), -torch.inf)
        labels = None
        if "start_positions" in targets:
            labels = torch.cat([targets["start_positions"], targets["end_positions"]]).long()
        return student, self._spread(pre_rows, mask), self._spread(fine_rows, mask), labels

    @staticmethod
    def _spread(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        full = rows.new_full((*mask.shape, 2), -torch.inf)
        full[mask] = rows
        return torch.cat([full[..., 0], full[..., 1]])

    def unlabelled(self, example: dict) -> dict:
        return {"start_positions": IGNORE_INDEX, "end_positions": IGNORE_INDEX}


ROWS_BY_KIND = {"classification": SequenceRows, "regression": RegressionRows, "token": TokenRows, "qa": SpanRows}


def rows_for(kind: str):
    if kind == "causal_lm":
        return LmRows()
    try:
        return ROWS_BY_KIND[kind]()
    except KeyError:
        raise ValueError(f"no distillation rows for task kind {kind!r}; known: {', '.join(ROWS_BY_KIND)}") from None


def regression_kd_loss(
    student,
    pre,
    fine,
    labels=None,
    *,
    alpha=0.0,
    beta=1.0,
    gamma=1.0,
    temperature=1.0,
    ce_weight=1.0,
    ignore_index=IGNORE_INDEX,
    reduction="mean",
    backend="auto",
):
    """The hybrid loss for one regression output per row (see the module docstring); NaN labels are unlabelled.

    ``temperature``, ``ignore_index`` and ``backend`` are accepted for signature parity and unused.
    """
    if reduction != "mean":
        raise ValueError(f"regression_kd_loss supports reduction='mean' only, got {reduction!r}")
    if student.dim() != 1 or pre.shape != student.shape or fine.shape != student.shape:
        raise ValueError(
            f"expected three (N,) tensors, got {tuple(student.shape)}, {tuple(pre.shape)}, {tuple(fine.shape)}"
        )
    pre, fine = pre.detach().float(), fine.detach().float()
    mixed = alpha * pre + (1.0 - alpha) * student.float()
    loss = mixed.new_zeros(())
    if labels is not None and ce_weight:
        labelled = ~torch.isnan(labels)
        if labelled.any():
            loss = loss + ce_weight * (mixed[labelled] - labels[labelled].float()).pow(2).mean()
    if beta:
        loss = loss + beta * (mixed - pre).pow(2).mean()
    if gamma:
        loss = loss + gamma * (mixed - fine).pow(2).mean()
    return loss


def loss_for(kind: str):
    if kind == "regression":
        return regression_kd_loss

    return hybrid_kd_loss


# ---------------------------------------------------------------------------------------------------------------
# Teacher logits


@dataclass
class TeacherLogits:
    """Teacher rows of every feature: ``values[offsets[i]:offsets[i+1]]`` are feature i's rows."""

    values: torch.Tensor  # (total_rows, K) float32
    offsets: torch.Tensor  # (n_features + 1,) int64
    width: int = 0  # rows made by the linear probe: the width H of the features they were computed from (cost 2·H·K)

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    def to(self, device) -> TeacherLogits:
        return TeacherLogits(self.values.to(device), self.offsets.to(device))

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """Rows of features ``index`` concatenated in that order."""
        index = index.to(self.offsets.device)
        starts, lengths = self.offsets[index], self.offsets[index + 1] - self.offsets[index]
        if bool((lengths == 1).all()):
            return self.values[starts]
        first = torch.cumsum(lengths, 0) - lengths  # where each feature's rows begin in the output
        rows = torch.repeat_interleave(starts - first, lengths) + torch.arange(int(lengths.sum()), device=index.device)
        return self.values[rows]


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over every state-dict tensor (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def features_hash(features, columns=("input_ids", "attention_mask", "token_type_ids")) -> str:
    """sha256 of the model-input columns of ``features`` (Arrow IPC bytes, rows in order)."""
    present = [c for c in columns if c in features.column_names]
    table = features.select_columns(present).with_format("arrow")[:]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def length_sorted_pass(
    model, features, collator, rows, step, *, batch_size: int, progress: bool, device=None, desc: str = "teacher logits"
):
    """Run ``step(batch, model_inputs) -> (rows (n, K), rows per feature (B,))`` in eval mode without gradients over
    ``features`` in batches of similar length (longest first, so a batch pads little), then put the rows back in
    the features' order (feature i's rows at ``offsets[i]:offsets[i + 1]``; i is the position in ``features``, the
    value of its `INDEX_COLUMN` where it has one). Returns (values, offsets, non-padding tokens)."""
    extras = getattr(rows, "extra_columns", ())
    teacher_columns = getattr(rows, "teacher_columns", ())
    inputs = features.select_columns(
        [
            c
            for c in ("input_ids", "attention_mask", "token_type_ids", *extras, *teacher_columns)
            if c in features.column_names
        ]
    )
    collator = rows.collator(collator) if extras else collator
    order = longest_first(feature_lengths(features)).tolist()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    loader = DataLoader(inputs, batch_sampler=batches, collate_fn=collator)
    device = _model_device(model) if device is None else device
    was_training = model.training
    model.eval()
    values, counts, tokens = [], [], 0
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, disable=not progress):
            batch = {k: v.to(device) for k, v in batch.items()}
            model_inputs = {k: v for k, v in batch.items() if k not in extras and k not in teacher_columns}
            if "attention_mask" in batch:
                tokens += int(batch["attention_mask"].sum())
            batch_rows, batch_counts = step(batch, model_inputs)
            values.append(batch_rows.float().cpu())
            counts.append(batch_counts.cpu())
    model.train(was_training)
    if not values:
        return torch.zeros(0, 0), torch.zeros(1, dtype=torch.long), 0
    counts = torch.cat(counts)
    in_order = TeacherLogits(torch.cat(values), torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)]))
    position = torch.empty(len(order), dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(len(order))
    restored = in_order.gather(position)
    per_feature = counts[position]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(per_feature, 0)])
    return restored, offsets, tokens


def compute_teacher_logits(model, features, collator, rows, *, batch_size: int, progress: bool) -> TeacherLogits:
    """Run ``model`` once over ``features`` (no labels; length-sorted batches, rows in the features' order) and keep
    its rows."""
    forward = getattr(rows, "teacher_forward", None)

    def step(batch, model_inputs):
        _COUNTS["teacher_forward_passes"] += 1
        outputs = forward(model, model_inputs) if forward is not None else model(**model_inputs)
        return rows.output_rows(outputs, batch)

    values, offsets, _ = length_sorted_pass(model, features, collator, rows, step, batch_size=batch_size,
                                            progress=progress)  # fmt: skip
    return TeacherLogits(values, offsets)


def cached_teacher_logits(
    model, features, collator, rows, *, cache_dir: Path, key_data: dict, batch_size: int, progress: bool
) -> tuple[TeacherLogits, float]:
    """Teacher rows from ``cache_dir/teacher_logits/`` or computed and stored; also the compute time recorded."""
    extras = getattr(rows, "extra_columns", ())
    key_data = {
        "weights": weights_hash(model),
        "features": features_hash(features, ("input_ids", "attention_mask", "token_type_ids", *extras)),
        "rows": type(rows).__name__,
        **key_data,
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=repr).encode()).hexdigest()[:16]

    path = Path(cache_dir) / "teacher_logits" / f"{key}.pt"
    with claimed(path, path.is_file) as mine:  # concurrent workers: one computes, the others wait for the file
        if not mine:
            stored = torch.load(path, weights_only=True)
            return TeacherLogits(stored["values"], stored["offsets"]), float(stored["time_s"])
        start = time.perf_counter()
        logits = compute_teacher_logits(model, features, collator, rows, batch_size=batch_size, progress=progress)
        elapsed = time.perf_counter() - start
        _store_rows(path, key, logits, elapsed)
    return logits, elapsed


def _store_rows(path: Path, key: str, logits: TeacherLogits, elapsed: float) -> None:
    """Write teacher rows atomically (rank 0 only)."""
    if int(os.environ.get("RANK", "0")) == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"tmp-{key}-", suffix=".part", dir=path.parent)
        os.close(fd)
        try:
            torch.save({"values": logits.values, "offsets": logits.offsets, "time_s": elapsed}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


# ---------------------------------------------------------------------------------------------------------------
# Training


class IndexedCollator:
    """Wraps a task collator: takes the feature index column out before padding and returns it as a tensor."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features: list[dict]) -> dict:
        if INDEX_COLUMN not in features[0]:  # an evaluation batch: nothing to fetch from the teachers
            return self.inner(features)
        index = [f[INDEX_COLUMN] for f in features]
        batch = self.inner([{k: v for k, v in f.items() if k != INDEX_COLUMN} for f in features])
        batch[INDEX_COLUMN] = torch.tensor(index, dtype=torch.long)
        return batch


def with_unlabelled(features, extra, rows):
    """``features`` followed by the rows of ``extra`` with every label set to ignored (``rows.unlabelled``), so they
    reach the two KL terms and not the label's. ``extra`` needs the columns of ``features`` other than the labels;
    its other columns are dropped."""
    labels = set(rows.label_columns)
    missing = [c for c in features.column_names if c not in labels and c not in extra.column_names]
    if missing:
        raise ValueError(f"the unlabelled inputs have no column {missing[0]!r}, which the training features have; "
                         f"their columns: {', '.join(extra.column_names)}")  # fmt: skip
    extra = extra.remove_columns([c for c in extra.column_names if c in labels])
    extra = extra.map(rows.unlabelled, desc="unlabelled rows")
    extra = extra.select_columns(features.column_names)
    return concatenate_datasets([features, extra.cast(features.features)])


def with_index(features):
    """``features`` plus the index column the distillation batches use to fetch teacher rows."""
    if INDEX_COLUMN in features.column_names:
        features = features.remove_columns(INDEX_COLUMN)
    return features.add_column(INDEX_COLUMN, list(range(len(features))))


class OutputMixModel(torch.nn.Module):
    """Inference of the output-space mix: m = α·teacher(x) + (1−α)·student(x) on every logit field.

    The teacher (θ_pre) is frozen; both models run on every input, so evaluation needs both.
    """

    LOGIT_FIELDS = ("logits", "start_logits", "end_logits")

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module, alpha: float):
        super().__init__()
        self.student, self.teacher, self.alpha = student, teacher, float(alpha)
        self.config = student.config
        for param in self.teacher.parameters():
            param.requires_grad_(False)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        out = self.student(**inputs)
        with torch.no_grad():
            ref = self.teacher(**inputs)
        for field in self.LOGIT_FIELDS:
            if getattr(out, field, None) is not None:
                out[field] = self.alpha * ref[field] + (1.0 - self.alpha) * out[field]
        return out
