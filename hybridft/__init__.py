"""hybridft: compare full fine-tuning, adapters, LoRA and hybrid fine-tuning on GLUE, SQuAD and CoNLL-2003.

``from hybridft import hybrid_kd_loss`` (and ``hybrid_kd_linear_loss``) needs only torch (and triton for the fused
kernel); everything that pulls in transformers, datasets or evaluate is imported lazily by its own submodule, and
``HybridTrainer`` / ``HybridTrainingArguments`` (`hybridft.trainer`) on first access.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def _mount_source_kernels() -> None:
    """Map the top-level ``kernels/`` folder to ``hybridft.kernels`` in an uninstalled source checkout.

    An installed (or editable) hybridft already provides ``hybridft.kernels``; this covers ``PYTHONPATH=.`` runs,
    such as a GPU machine that has torch and triton but cannot pip-install the project.
    """
    if "hybridft.kernels" in sys.modules or importlib.util.find_spec("hybridft.kernels") is not None:
        return
    folder = Path(__file__).resolve().parent.parent / "kernels"
    init = folder / "__init__.py"
    if not init.is_file():
        return
    spec = importlib.util.spec_from_file_location("hybridft.kernels", init, submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["hybridft.kernels"] = module
    spec.loader.exec_module(module)


_mount_source_kernels()

from hybridft.linear_loss import hybrid_kd_linear_loss  # noqa: E402
from hybridft.loss import hybrid_kd_loss  # noqa: E402  (needs the mount above for the triton backend)

__all__ = ["HybridTrainer", "HybridTrainingArguments", "__version__", "hybrid_kd_linear_loss", "hybrid_kd_loss"]

# The trainer needs transformers and datasets: imported on first use, so the losses above need only torch.
_LAZY = {"HybridTrainer": "hybridft.trainer", "HybridTrainingArguments": "hybridft.trainer_args"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hybridft' has no attribute {name!r}")
