"""The Task contract shared by every task kind (classification, regression, token, qa, causal_lm).

A Task is a frozen description (source, labels, splits, metric, headline) plus the four things every method
needs: ``load``, ``preprocess``, ``collator`` and ``compute_metrics``. The kinds live in glue.py, conll.py,
squad.py and causal_lm.py; the registry is in __init__.py.

A task may also define ``predict_outputs(model, features, tokenizer, *, batch_size, progress)``, returning what its
``compute_metrics`` takes; evaluation then calls it instead of the Trainer's prediction loop (the causal_lm tasks
do: label-word log-likelihoods, generated answers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import transformers

from bench.data import load_hub, load_local_parquet, resolve_data_dir
from bench.metrics import load
from hybridft.task_kinds import KINDS

if TYPE_CHECKING:
    import numpy as np
    from datasets import Dataset


@dataclass(frozen=True, kw_only=True)
class Task:
    """One benchmark task. Subclasses implement preprocess / collator / compute_metrics for their kind."""

    name: str
    kind: str
    num_labels: int
    label_names: tuple[str, ...]
    hub_id: str
    hub_config: str | None
    local_dir: str  # folder under the data dir holding <split>.parquet, e.g. "glue/sst2"
    headline: str
    metric_name: str
    metric_config: str | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    extra_eval_splits: tuple[str, ...] = ()
    metric_scale: float = 100.0  # multiply metric values by this to get percent (squad's are already 0-100)

    model_auto_class: ClassVar[str] = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The main evaluation split followed by the extra ones."""
        return (self.eval_split, *self.extra_eval_splits)

    # ------------------------------------------------------------------ source
    def local_path(self, data_dir: Path, split: str) -> Path:
        """Where ``split`` lives in a local data folder."""
        return Path(data_dir) / self.local_dir / f"{split}.parquet"

    def load(self, split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
        """One split: from ``data_dir`` (or $HYBRIDFT_DATA_DIR) if set, else from the hub. Never a fallback."""
        if not isinstance(split, str) or not split:
            raise ValueError(f"task {self.name!r}: split must be a non-empty string, got {split!r}")
        root = resolve_data_dir(data_dir)
        if root is None:
            return load_hub(self.hub_id, self.hub_config, split)
        return load_local_parquet(
            self.local_path(root, split), hub_id=self.hub_id, hub_config=self.hub_config, split=split
        )

    def has_offline(self, data_dir: str | os.PathLike) -> bool:
        """Whether the train split and the main evaluation split exist in ``data_dir``."""
        root = Path(data_dir)
        return all(self.local_path(root, split).is_file() for split in (self.train_split, self.eval_split))

    # ------------------------------------------------------------------ model
    def model_class(self) -> type:
        """The transformers Auto class for this task's head."""
        return getattr(transformers, self.model_auto_class)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``from_pretrained`` / ``from_config``: labels and, for regression, problem_type."""
        id2label = {i: name for i, name in enumerate(self.label_names)}
        return {"num_labels": self.num_labels, "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}

    def metric(self):
        """The task's local evaluate module, configured like the hub's."""
        return load(self.metric_name, self.metric_config)

    # ------------------------------------------------------------------ per kind
    def preprocess(
        self, dataset: Dataset, tokenizer, *, max_length: int = 128, train: bool, stride: int = 64
    ) -> Dataset:
        raise NotImplementedError

    def collator(self, tokenizer):
        raise NotImplementedError

    def compute_metrics(self, predictions: Any, features: Dataset, examples: Dataset) -> dict[str, float]:
        raise NotImplementedError


def check_tokenizer(tokenizer, task: str) -> None:
    """Preprocessing relies on word_ids / offset mappings, which only fast tokenizers give."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"task {task!r} needs a fast (Rust) tokenizer, got {type(tokenizer).__name__}")
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise ValueError(f"task {task!r} expects padding_side='right', got {tokenizer.padding_side!r}")


def check_max_length(max_length: int, task: str) -> None:
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 8:
        raise ValueError(f"task {task!r}: max_length must be an int >= 8, got {max_length!r}")


class DropColumnsCollator:
    """Wraps a transformers collator, dropping the columns that only post-processing needs (not tensors)."""

    def __init__(self, inner, drop: tuple[str, ...]):
        self.inner = inner
        self.drop = frozenset(drop)

    def __call__(self, features: list[dict]) -> dict:
        return self.inner([{k: v for k, v in f.items() if k not in self.drop} for f in features])


def as_numpy(predictions: Any) -> np.ndarray:
    """Model outputs as a float64 numpy array (accepts torch tensors, lists, tuples of one array)."""
    if isinstance(predictions, tuple) and len(predictions) == 1:
        predictions = predictions[0]
    if hasattr(predictions, "detach"):
        predictions = predictions.detach().float().cpu().numpy()
    return np.asarray(predictions, dtype=np.float64)


def check_rows(predictions, n_rows: int, task: str, what: str = "features") -> None:
    if len(predictions) != n_rows:
        raise ValueError(f"task {task!r}: predictions have {len(predictions)} rows but there are {n_rows} {what}")
