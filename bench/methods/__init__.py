"""The benchmark's own methods, registered into the library's registry (`hybridft.methods.registry`) on import:
the compute-matched baselines (`matched`: plain_matched; `peft_hybrid`: hybrid_lora and lora_matched) and the
multi-task methods (`multitask`). The library never imports this package; `bench.experiment` does.
"""

from __future__ import annotations

# isort: off
from bench.methods import matched, peft_hybrid, multitask  # noqa: F401

# isort: on
from hybridft.methods import Method, MethodConfig, TrainContext, Trained, get_method, method_names

__all__ = ["Method", "MethodConfig", "TrainContext", "Trained", "get_method", "method_names"]
