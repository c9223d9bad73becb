"""The method registry, one registration per method: a `Method` subclass registers itself by name on import.

    from hybridft.methods import get_method, method_names
    method = get_method("lora")
    config = method.make_config({"r": 16}, learning_rate=1e-3)

The library's methods register in `hybridft.methods`; the benchmark's own (the compute-matched baselines, hybrid
LoRA and the multi-task methods) register into this same registry from `bench.methods`.
"""

from __future__ import annotations

from hybridft.methods.base import Method

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


__all__ = ["get_method", "method_names", "register"]
