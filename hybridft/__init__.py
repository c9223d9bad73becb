"""hybridft: compare full fine-tuning, adapters, LoRA and hybrid fine-tuning on GLUE, SQuAD and CoNLL-2003.

``from hybridft import hybrid_kd_loss`` (and ``hybrid_kd_linear_loss``) needs only torch (and triton for the fused
kernel); everything that pulls in transformers, datasets or evaluate is imported lazily by its own submodule, and
``HybridTrainer`` / ``HybridTrainingArguments`` (`hybridft.trainer`) on first access.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def _mount_source_kernels() -> None:
    """Map the top-level ``kernels/`` folder to ``hybridft.kernels`` in an uninstalled source checkout.

    ``kernels/`` has no ``__init__.py``: a namespace folder never shadows Hugging Face's ``kernels`` package, which
    transformers 5 imports, even with the repository root on ``sys.path``. An installed hybridft ships the folder as
    ``hybridft/kernels`` (``[tool.setuptools.package-dir]``); in a source checkout (``PYTHONPATH=.``, such as a GPU
    machine that has torch and triton but cannot pip-install the project, or an editable install, whose finder
    looks for an ``__init__.py``) this makes ``hybridft.kernels`` a package whose path is that folder.
    """
    if "hybridft.kernels" in sys.modules or importlib.util.find_spec("hybridft.kernels") is not None:
        return
    folder = Path(__file__).resolve().parent.parent / "kernels"
    if not (folder / "hybrid_kd.py").is_file():
        return
    spec = importlib.machinery.ModuleSpec("hybridft.kernels", None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    sys.modules["hybridft.kernels"] = module = importlib.util.module_from_spec(spec)
    globals()["kernels"] = module  # the attribute an import of a subpackage sets on its parent


_mount_source_kernels()

from hybridft.linear_loss import hybrid_kd_linear_loss  # noqa: E402
from hybridft.loss import hybrid_kd_loss  # noqa: E402  (needs the mount above for the triton backend)

__all__ = ["HybridTrainer", "HybridTrainingArguments", "__version__", "hybrid_kd_linear_loss", "hybrid_kd_loss"]

# The trainer needs transformers and datasets: imported on first use, so the losses above need only torch.
_LAZY = {"HybridTrainer": "hybridft.trainer", "HybridTrainingArguments": "hybridft.trainer_config"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hybridft' has no attribute {name!r}")
