"""Shared fixtures. The Triton interpreter must be switched on before any @triton.jit runs, so it happens here."""

from __future__ import annotations

import importlib.util
import os
import random
import zlib
from pathlib import Path

import pytest

# No GPU here: run Triton kernels through the interpreter (slow; tests keep shapes small). Set before any import of
# hybridft.kernels, since @triton.jit reads it at decoration time.
try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover - torch is a hard dependency
    _HAS_CUDA = False
if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
HAS_TRITON = importlib.util.find_spec("triton") is not None


def pytest_collection_modifyitems(config, items):
    """Without triton (an environment such as `nox -s compat`), the kernel's tests (marked ``triton``) are skipped
    with the reason, and every torch back end still runs."""
    if HAS_TRITON:
        return
    skip = pytest.mark.skip(reason="triton is not installed: the kernel back end cannot run here")
    for item in items:
        if "triton" in item.keywords:
            item.add_marker(skip)


REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def seed(request) -> int:
    """A fresh seed per test (derived from its node id, so a failure reproduces), applied to every RNG."""
    value = zlib.crc32(request.node.nodeid.encode())
    random.seed(value)
    try:
        import numpy as np

        np.random.seed(value)
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(value)
    return value


def _find_data_dir() -> Path | None:
    env = os.environ.get("HYBRIDFT_DATA_DIR")
    if env:
        return Path(env)
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data folder (HYBRIDFT_DATA_DIR, else ../shared/data). Tests that need it fail loudly without it."""
    path = _find_data_dir()
    if path is None or not path.is_dir():
        pytest.fail("no offline data: set HYBRIDFT_DATA_DIR or put the shared data folder at ../shared/data")
    return path
