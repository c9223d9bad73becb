"""bench.data: data folder resolution, seeded subsets and content fingerprints."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from datasets import Dataset, load_dataset

from bench.data import DATA_DIR_ENV, SubsetInfo, content_fingerprint, resolve_data_dir, subset, subset_indices


def test_resolve_data_dir_prefers_argument_then_env(tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(other))
    assert resolve_data_dir(tmp_path) == tmp_path
    assert resolve_data_dir(None) == other
    monkeypatch.delenv(DATA_DIR_ENV)
    assert resolve_data_dir(None) is None


def test_resolve_data_dir_rejects_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        resolve_data_dir(tmp_path / "nope")


def _sst2_validation(data_dir):
    return load_dataset(
        "parquet", data_files={"validation": str(data_dir / "glue/sst2/validation.parquet")}, split="validation"
    )


def test_subset_is_deterministic_and_seed_sensitive(data_dir, seed):
    dataset = _sst2_validation(data_dir)
    first, info = subset(dataset, 100, seed, task="sst2", split="validation")
    again, info_again = subset(dataset, 100, seed, task="sst2", split="validation")
    other, info_other = subset(dataset, 100, seed + 1, task="sst2", split="validation")
    assert first["idx"] == again["idx"] and info == info_again
    assert first["idx"] != other["idx"] and info.fingerprint != info_other.fingerprint
    assert len(first) == 100 and len(set(first["idx"])) == 100
    assert first["idx"] == sorted(first["idx"])  # original order kept
    assert info == SubsetInfo(task="sst2", split="validation", size=100, seed=seed, fingerprint=info.fingerprint)
    assert info.to_dict() == {
        "task": "sst2",
        "split": "validation",
        "size": 100,
        "seed": seed,
        "fingerprint": info.fingerprint,
    }


def test_subset_matches_numpy_permutation(seed):
    expected = np.sort(np.random.default_rng(seed).permutation(50)[:7])
    assert subset_indices(50, 7, seed).tolist() == expected.tolist()


def test_whole_split_when_size_is_none_or_too_large(data_dir):
    dataset = _sst2_validation(data_dir)
    whole, info = subset(dataset, None, 3, task="sst2", split="validation")
    bigger, info_bigger = subset(dataset, 10_000, 4, task="sst2", split="validation")
    assert len(whole) == len(bigger) == len(dataset) == info.size == 872
    assert info.fingerprint == info_bigger.fingerprint == content_fingerprint(dataset)


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "10"])
def test_subset_rejects_bad_size(size):
    dataset = Dataset.from_dict({"x": [1, 2, 3]})
    with pytest.raises(ValueError, match="size must be a positive int"):
        subset(dataset, size, 0, task="t", split="train")


def test_subset_rejects_bad_seed():
    with pytest.raises(ValueError, match="seed must be an int"):
        subset(Dataset.from_dict({"x": [1, 2]}), 1, 1.5, task="t", split="train")


def test_fingerprint_depends_on_content_not_on_file_path(data_dir, tmp_path):
    copy = tmp_path / "elsewhere.parquet"
    shutil.copyfile(data_dir / "glue/sst2/validation.parquet", copy)
    original = _sst2_validation(data_dir)
    moved = load_dataset("parquet", data_files={"validation": str(copy)}, split="validation")
    assert original._fingerprint != moved._fingerprint  # why datasets' own fingerprint is not used
    assert content_fingerprint(original) == content_fingerprint(moved)
    changed = original.map(lambda row: {"sentence": row["sentence"] + "!"} if row["idx"] == 5 else row)
    assert content_fingerprint(changed) != content_fingerprint(original)


def test_fingerprint_is_stable_across_processes(data_dir):
    dataset = _sst2_validation(data_dir)
    _, info = subset(dataset, 64, 11, task="sst2", split="validation")
    code = (
        "from datasets import load_dataset; from bench.data import subset; "
        f"d = load_dataset('parquet', data_files={{'v': {str(data_dir / 'glue/sst2/validation.parquet')!r}}}, split='v'); "
        "print(subset(d, 64, 11, task='sst2', split='validation')[1].fingerprint)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.strip().splitlines()[-1] == info.fingerprint
