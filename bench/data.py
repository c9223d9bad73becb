"""Where the data comes from, and deterministic, fingerprinted subsets of it.

Data location: an explicit argument wins, then ``$HYBRIDFT_DATA_DIR``, else ``None`` (load from the Hugging Face
hub). A local folder uses the layout of the shared offline data: ``<dir>/glue/<task>/<split>.parquet``,
``<dir>/squad/<split>.parquet``, ``<dir>/squad_v2/<split>.parquet``, ``<dir>/conll2003/<split>.parquet``.

Subsets: ``subset(dataset, size, seed, task=..., split=...)`` draws ``size`` rows with
``numpy.random.default_rng(seed).permutation(len(dataset))[:size]`` and keeps them in their original order. The
fingerprint is a sha256 over the *content* of the selected rows (every column, in row order, as JSON), so it names
exactly what a result ran on and is the same on every machine and in every process. ``datasets``' own
``_fingerprint`` is not used: for a parquet load it depends on the file's path and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from datasets import load_dataset

if TYPE_CHECKING:
    from datasets import Dataset

DATA_DIR_ENV = "HYBRIDFT_DATA_DIR"
_HASH_BATCH_ROWS = 10_000


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data folder: ``data_dir`` if given, else ``$HYBRIDFT_DATA_DIR``, else ``None`` (use the hub)."""
    if data_dir is not None and str(data_dir) != "":
        path = Path(data_dir).expanduser()
    elif os.environ.get(DATA_DIR_ENV):
        path = Path(os.environ[DATA_DIR_ENV]).expanduser()
    else:
        return None
    if not path.is_dir():
        raise FileNotFoundError(f"data_dir {str(path)!r} is not a directory (from the argument or ${DATA_DIR_ENV})")
    return path


def load_local_parquet(path: Path, *, hub_id: str, hub_config: str | None, split: str) -> Dataset:
    """One split from a local parquet file; a missing file raises FileNotFoundError naming it and the hub id."""
    if not path.is_file():
        source = f"{hub_id}" + (f" (config {hub_config!r})" if hub_config else "")
        raise FileNotFoundError(
            f"split {split!r} is not available offline: {path} does not exist. "
            f"It comes from the Hugging Face hub dataset {source}; run without a data dir to download it, "
            f"or put the file there."
        )

    return load_dataset("parquet", data_files={split: str(path)}, split=split)


def load_hub(hub_id: str, hub_config: str | None, split: str) -> Dataset:
    """One split from the Hugging Face hub (needs network access or a warm datasets cache)."""
    return load_dataset(hub_id, hub_config, split=split)


def content_fingerprint(dataset: Dataset) -> str:
    """sha256 over every row's content (columns sorted by name, rows in order, JSON); stable across machines."""
    digest = hashlib.sha256()
    columns = sorted(dataset.column_names)
    digest.update(json.dumps({"columns": columns, "rows": len(dataset)}).encode())
    arrow = dataset.with_format("arrow")
    for start in range(0, len(dataset), _HASH_BATCH_ROWS):
        table = arrow[start : start + _HASH_BATCH_ROWS]
        for name in columns:
            values = table.column(name).to_pylist()
            digest.update(json.dumps(values, ensure_ascii=False, sort_keys=True).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class SubsetInfo:
    """What a result ran on: the task, the split, how many rows, the subset seed and a content fingerprint."""

    task: str
    split: str
    size: int
    seed: int
    fingerprint: str

    def to_dict(self) -> dict:
        return asdict(self)


def subset_indices(num_rows: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded subset of ``size`` rows (all rows when size is None or >= num_rows)."""
    if size is not None and (not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1):
        raise ValueError(f"size must be a positive int or None (whole split), got {size!r}")
    if size is None or size >= num_rows:
        return np.arange(num_rows)
    chosen = np.random.default_rng(seed).permutation(num_rows)[:size]
    return np.sort(chosen)


def subset(dataset: Dataset, size: int | None, seed: int, *, task: str, split: str) -> tuple[Dataset, SubsetInfo]:
    """A deterministic seeded subset of ``size`` rows (original order kept) and the SubsetInfo naming it."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    indices = subset_indices(len(dataset), size, int(seed))
    if len(indices) < len(dataset):
        dataset = dataset.select(indices.tolist())
    info = SubsetInfo(
        task=task, split=split, size=len(dataset), seed=int(seed), fingerprint=content_fingerprint(dataset)
    )
    return dataset, info
