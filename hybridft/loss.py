"""Placeholder until the fused-loss issue lands: the public entry point is defined by the kernel work."""


def hybrid_kd_loss(*args, **kwargs):  # pragma: no cover - replaced by the real implementation
    raise NotImplementedError("hybrid_kd_loss is being implemented")
