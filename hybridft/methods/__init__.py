"""The library's methods: every fine-tuning strategy is one `Method` (config dataclass + wiring) registered by name
(`hybridft.methods.registry`).

    from hybridft.methods import get_method, method_names
    method = get_method("lora")
    config = method.make_config({"r": 16}, learning_rate=1e-3)

Adding a method means adding one module that defines a `Method` subclass decorated with `register`, plus its import
line below. The benchmark's own methods register from `bench.methods`.
"""

from __future__ import annotations

# Registration happens on import; the order here is the order of method_names().
# isort: off
from hybridft.methods import plain, peft_methods, staged, hybrid, zero_shot  # noqa: F401

# isort: on
from hybridft.methods.base import Method, MethodConfig, TrainContext, Trained
from hybridft.methods.registry import get_method, method_names, register

__all__ = ["Method", "MethodConfig", "TrainContext", "Trained", "get_method", "method_names", "register"]
