"""Method registry: every fine-tuning strategy is one `Method` (config dataclass + wiring) registered by name.

    from hybridft.methods import get_method, method_names
    method = get_method("lora")
    config = method.make_config({"r": 16}, learning_rate=1e-3)

Adding a method means adding one module that defines a `Method` subclass and calls `register` on it, plus its
import line below.
"""

from __future__ import annotations

from hybridft.methods.base import Method, MethodConfig, TrainContext, Trained

_REGISTRY: dict[str, Method] = {}


def register(method_cls: type[Method]) -> type[Method]:
    """Class decorator: make ``method_cls`` available under ``method_cls.name``."""
    name = method_cls.name
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered (by {type(_REGISTRY[name]).__name__})")
    _REGISTRY[name] = method_cls()
    return method_cls


def get_method(name: str) -> Method:
    """The registered method called ``name``; ValueError naming it and listing the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(method_names())}") from None


def method_names() -> list[str]:
    """Every registered method, in registration order."""
    return list(_REGISTRY)


# Registration happens on import; the order here is the order of method_names().
from hybridft.methods import plain, matched, peft_methods, staged, hybrid, zero_shot, peft_hybrid, multitask  # noqa: E402, F401, I001

__all__ = ["Method", "MethodConfig", "TrainContext", "Trained", "get_method", "method_names", "register"]
