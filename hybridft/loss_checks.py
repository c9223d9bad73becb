"""What the hybrid losses share, below both back ends and the Triton kernel: the validated scalar arguments
(`LossParams`), the argument checks, and the scaling of a gradient stored in the forward pass (docs/design.md §2).

A leaf: it imports torch only, so `hybridft.loss`, `hybridft.linear_loss` and `hybridft.kernels.hybrid_kd` all
import it and none of them imports another to get these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch

BACKENDS = ("auto", "triton", "torch", "reference")
REDUCTIONS = ("mean", "sum", "none")
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
IGNORE_INDEX = -100  # the label of a row without a target (Hugging Face's convention)


@dataclass(frozen=True)
class LossParams:
    """The scalar arguments of hybrid_kd_loss, already validated."""

    alpha: float
    beta: float
    gamma: float
    temperature: float
    ce_weight: float
    ignore_index: int
    reduction: str


def check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_scalars(alpha, beta, gamma, temperature, ce_weight, ignore_index, reduction, backend) -> LossParams:
    alpha = check_real("alpha", alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    weights = {"beta": beta, "gamma": gamma, "ce_weight": ce_weight}
    for name, value in weights.items():
        weights[name] = check_real(name, value)
        if weights[name] < 0:
            raise ValueError(f"{name} must be >= 0, got {weights[name]}")
    temperature = check_real("temperature", temperature)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__} {ignore_index!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return LossParams(
        alpha, weights["beta"], weights["gamma"], temperature, weights["ce_weight"], ignore_index, reduction
    )


def check_float_tensor(name: str, x: object) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor of dtype float32, bfloat16, float16 or float64, got {x.dtype}"
        )


def check_logits(student: torch.Tensor, pre: torch.Tensor, fine: torch.Tensor) -> None:
    for name, x in (("student_logits", student), ("pre_logits", pre), ("fine_logits", fine)):
        check_float_tensor(name, x)
        if x.dim() < 2:
            raise ValueError(f"{name} must have shape (N, C) or (..., C), got {tuple(x.shape)}")
    for name, x in (("pre_logits", pre), ("fine_logits", fine)):
        if x.shape != student.shape:
            raise ValueError(
                f"{name} must have the shape of student_logits {tuple(student.shape)}, got {tuple(x.shape)}"
            )
        if x.dtype != student.dtype:
            raise TypeError(f"{name} must have the dtype of student_logits ({student.dtype}), got {x.dtype}")
        if x.device != student.device:
            raise ValueError(f"{name} must be on the device of student_logits ({student.device}), got {x.device}")


def check_labels(
    labels: torch.Tensor | None,
    lead: torch.Size,
    num_classes: int,
    device: torch.device,
    ignore_index: int,
    source: str = "student_logits",
) -> torch.Tensor | None:
    """Validate labels against the rows' leading shape and return them flattened to (N,); ``source`` is the argument
    the rows come from, for the messages. One reduction over N labels checks the range: on CPU it raises ValueError
    with the first bad label; on CUDA it is a device-side assert (torch._assert_async, as F.cross_entropy does),
    so the training step never waits for the GPU here."""
    if labels is None:
        return None
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor or None, got {type(labels).__name__}")
    if labels.dtype != torch.int64:
        raise TypeError(f"labels must be an int64 tensor, got {labels.dtype}")
    num_rows = lead.numel()
    if labels.shape != lead and labels.shape != (num_rows,):
        raise ValueError(
            f"labels must have shape {tuple(lead)} (the leading shape of {source}) or ({num_rows},), "
            f"got {tuple(labels.shape)}"
        )
    if labels.device != device:
        raise ValueError(f"labels must be on the device of {source} ({device}), got {labels.device}")
    flat = labels.reshape(-1)
    bad = (flat != ignore_index) & ((flat < 0) | (flat >= num_classes))
    if flat.is_cuda:
        message = f"labels must be in [0, {num_classes}) or equal ignore_index={ignore_index}"
        torch._assert_async(bad.any().logical_not(), message)
        return flat
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"labels must be in [0, {num_classes}) or equal ignore_index={ignore_index}, "
            f"got {int(flat[index])} at row {index}"
        )
    return flat


def graph_kept() -> bool:
    """True when this backward runs with retain_graph=True (PyTorch's own AOTAutograd asks the same question)."""
    probe = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    return True if probe is None else bool(probe())


def scale_grad(grad: torch.Tensor, grad_output: torch.Tensor, per_row: bool, dtype: torch.dtype | None = None):
    """The stored d(loss)/d(student) times grad_output (per row for "none"), in ``dtype`` (default grad's).

    No second (N, C) buffer in the usual case: a scalar grad_output of 1 (plain ``loss.backward()``) hands the
    stored tensor over, any other factor scales it in place. Both are only safe because the graph is freed after
    this backward; with retain_graph=True the stored gradient is left untouched and a new tensor is returned, so
    repeated backward calls stay correct. The ``== 1`` test reads grad_output on the host: free on CPU, a host sync
    on CUDA, so there it is made only for a gradient of at least 2^22 entries, where the pass over N·C it saves
    (32 MiB of traffic and more) should outweigh a sync (an estimate, not yet timed); smaller ones are scaled.
    A float32 gradient of half-precision logits is scaled in float32 and cast in the same pass (no host sync).
    """
    keep = graph_kept()
    same_dtype = dtype is None or dtype == grad.dtype
    check_one = not grad.is_cuda or grad.numel() >= 1 << 22
    if same_dtype and not per_row and check_one and bool(grad_output == 1):
        return grad.clone() if keep else grad
    factor = (grad_output.unsqueeze(-1) if per_row else grad_output).to(grad.dtype)
    if not same_dtype:  # one pass: float32 product, rounded once to dtype
        return torch.mul(grad, factor, out=torch.empty(grad.shape, dtype=dtype, device=grad.device))
    return grad * factor if keep else grad.mul_(factor)


__all__ = [
    "BACKENDS",
    "FLOAT_DTYPES",
    "IGNORE_INDEX",
    "REDUCTIONS",
    "LossParams",
    "check_float_tensor",
    "check_labels",
    "check_logits",
    "check_real",
    "check_scalars",
    "graph_kept",
    "scale_grad",
]
