"""The hybrid distillation loss: one public function, three back ends (docs/design.md §2).

Per row i over C classes, with m = α·pre + (1−α)·student:

    loss_i = ce_weight·CE(m_i, y_i)                          (skipped where y_i == ignore_index or labels is None)
           + β·T²·KL(softmax(pre_i/T) ‖ softmax(m_i/T))
           + γ·T²·KL(softmax(fine_i/T) ‖ softmax(m_i/T))

"mean" = Σ CE / #labelled rows + Σ KD / #rows (a term is 0 when its count is 0), "sum" adds every row, "none"
returns the per-row losses with the logits' leading shape ((N,) for (N, C) logits). Only ``student_logits``
gets a gradient: (1−α)·[ce_weight·(softmax(m) − onehot(y)) + β·T·(softmax(m/T) − p_pre) + γ·T·(softmax(m/T) −
p_fine)], scaled like its term by the reduction.

Back ends:
- ``"triton"``: the fused kernel in ``hybridft.kernels.hybrid_kd`` (CUDA, or CPU under ``TRITON_INTERPRET=1``).
- ``"torch"``: the fallback below. Same grad-in-forward design as the kernel, rows processed in chunks so the
  extra memory beyond the stored gradient is bounded (``_CHUNK_BYTES``), float32 arithmetic (float64 for float64
  inputs, which gradcheck uses).
- ``"reference"``: a plain composition of ``torch.nn.functional`` ops that autograd differentiates.
- ``"auto"``: ``"triton"`` for CUDA tensors when the kernel module imports, else ``"torch"``.

Conventions shared by every back end (tested):
- The loss is float32 (float64 for float64 inputs); the gradient has the logits' dtype.
- A weight of 0 switches its term off entirely, so 0·(−inf) never appears: with α = 0 the pretrained logits only
  enter through the β term, with α = 1 the student is not read at all (its gradient is 0).
- Masked classes are −inf. Each row needs at least one class that is finite in every input that is read. A teacher
  class at −inf has probability 0 and adds nothing to its KL. A class where the blend m is −inf but the teacher is
  finite makes that KL +inf (its true value, since a finite teacher logit has probability > 0), also where that
  probability underflows to 0 in the compute precision: one answer on every back end, never NaN. The gradient
  stays finite. Mask student and teachers identically, as QA padding does, and every term is finite.
- Half-precision logits (float16, bfloat16): the stored gradient is float32 (N·C·4 bytes, twice a half-precision
  gradient) and backward scales it by ``grad_output`` in float32, casting to the logits' dtype once. A loss scaler's
  factor (GradScaler's 65536 exceeds float16's largest value, 65504) therefore never passes through float16, and
  bfloat16 gradients are rounded once, not twice. Backward then briefly holds the float32 gradient and its
  half-precision result together.
- Labels may be any strided view (e.g. a column of an (N, 2) tensor), logits any strides: every back end gives the
  same result as for contiguous copies.
- ``backend="auto"`` on CUDA checks the kernel once per process, device and dtype against the torch fallback on a
  small probe (`triton_selfcheck`, milliseconds); if they disagree it warns once and uses the fallback from then on.
  ``HYBRIDFT_TRITON_SELFCHECK=0`` turns the check off.
- NaN in an input is not searched for (that would cost a full extra read of three tensors and a host sync every
  step): it propagates to the loss of its row, hence to the reduced loss, and to the gradient. It is never hidden,
  so a training loop sees a non-finite loss and can stop.
"""

from __future__ import annotations

import math
import os
import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from hybridft.loss_checks import (
    BACKENDS,
    REDUCTIONS,
    LossParams,
    check_labels,
    check_logits,
    check_scalars,
    scale_grad,
)

__all__ = ["BACKENDS", "REDUCTIONS", "SELFCHECK_ENV", "hybrid_kd_loss", "triton_selfcheck"]


# The fallback keeps up to ~8 (rows × C) temporaries of a chunk alive (plus 3 float32 copies of half-precision
# inputs): 256 KiB each keeps the working set in a 2 MiB per-core L2 (2–3× faster here than 4 MiB chunks at
# C = 32000) and bounds the extra memory at ~11 × _CHUNK_BYTES beyond the gradient, whatever N is.
_CHUNK_BYTES = 256 << 10


def hybrid_kd_loss(
    student_logits: torch.Tensor,
    pre_logits: torch.Tensor,
    fine_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    alpha: float = 0.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    ce_weight: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """Hybrid distillation loss of the student against a pretrained and a fine-tuned teacher (see module doc).

    Logits are (N, C) or (..., C) (flattened to rows); labels have the logits' leading shape or (N,), int64, or
    are None for no CE term. Returns a scalar, or the per-row losses with the leading shape for "none".
    """
    params = check_scalars(alpha, beta, gamma, temperature, ce_weight, ignore_index, reduction, backend)
    check_logits(student_logits, pre_logits, fine_logits)
    lead_shape = student_logits.shape[:-1]
    num_classes = student_logits.shape[-1]
    flat_labels = check_labels(labels, lead_shape, num_classes, student_logits.device, ignore_index)
    student = student_logits.reshape(-1, num_classes)
    # Teachers are constants of this loss: detached, they get no gradient, and a loss whose student needs none
    # does not require grad either, whatever the teachers say.
    pre, fine = (x.detach().reshape(-1, num_classes) for x in (pre_logits, fine_logits))

    name = resolve_backend(backend, student)
    if name == "reference":
        loss = reference_loss(student, pre, fine, flat_labels, params)
    elif name == "torch":
        loss = _TorchHybridKD.apply(student, pre, fine, flat_labels, params)
    else:
        from hybridft.kernels.hybrid_kd import hybrid_kd  # noqa: PLC0415  lazy: triton is needed for this back end only

        loss = hybrid_kd(student, pre, fine, flat_labels, params)
    return loss.reshape(lead_shape) if reduction == "none" else loss


# ----------------------------------------------------------------------------------------------------- checks


@lru_cache(maxsize=1)
def _triton_importable() -> bool:
    try:
        import hybridft.kernels.hybrid_kd  # noqa: F401, PLC0415  (heavy optional: triton)
    except Exception:  # any failure (no triton, no driver, broken install) means: use the fallback
        return False
    return True


SELFCHECK_ENV = "HYBRIDFT_TRITON_SELFCHECK"
_SELFCHECK_RESULTS: dict[tuple[str, torch.dtype], bool] = {}
# probe tolerances per dtype: the two back ends compute in float32 and differ only by summation order (float32) and
# by the final rounding of the gradient to the logits' dtype (half precision)
_SELFCHECK_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def triton_selfcheck(device, dtype: torch.dtype) -> tuple[bool, str]:
    """(agrees, detail): the Triton kernel against the torch fallback on a small seeded probe on ``device``.

    Two shapes (3 classes in one block; 2051 classes over several blocks, a partial last one), masked classes,
    an ignored label, α = 0.3, T = 2, "mean": the loss and the gradient must agree within the dtype's tolerance.
    """
    from hybridft.kernels.hybrid_kd import hybrid_kd_forward  # noqa: PLC0415  heavy optional: triton

    params = LossParams(0.3, 1.0, 1.0, 2.0, 1.0, -100, "mean")
    generator = torch.Generator().manual_seed(0)
    tol = _SELFCHECK_TOL.get(dtype, 1e-4)
    try:
        for rows, cols in ((6, 3), (5, 2051)):
            s, p, f = (torch.randn(rows, cols, generator=generator) * 3 for _ in range(3))
            for x in (s, p, f):
                x[0, -1] = -math.inf  # a class masked in every input
            labels = torch.randint(0, cols - 1, (rows,), generator=generator)
            labels[1] = params.ignore_index
            s, p, f = (x.to(device=device, dtype=dtype) for x in (s, p, f))
            labels = labels.to(device)
            loss_k, grad_k = hybrid_kd_forward(s, p, f, labels, params, need_grad=True)
            loss_t, grad_t = torch_forward(s, p, f, labels, params, want_grad=True)
            loss_k = loss_k.sum().double().cpu()
            loss_t = loss_t.double().cpu()
            if not torch.isfinite(loss_k) or abs(float(loss_k - loss_t)) > tol * max(1.0, abs(float(loss_t))):
                return False, f"loss {float(loss_k):.6g} vs {float(loss_t):.6g} at {rows}x{cols}"
            gap = float((grad_k.double() - grad_t.double()).abs().max())
            if not math.isfinite(gap) or gap > tol * max(1.0, float(grad_t.double().abs().max())):
                return False, f"gradient differs by {gap:.3g} at {rows}x{cols}"
    except Exception as err:  # a kernel that cannot even run is a kernel not to use
        return False, f"{type(err).__name__}: {err}"
    return True, ""


def _triton_trusted(device, dtype: torch.dtype) -> bool:
    """Whether ``auto`` may use the kernel on this device and dtype: the self-check's cached verdict."""
    if os.environ.get(SELFCHECK_ENV, "1") == "0":
        return True
    key = (str(device), dtype)
    if key not in _SELFCHECK_RESULTS:
        agrees, detail = triton_selfcheck(device, dtype)
        if not agrees:
            warnings.warn(
                f"hybrid_kd_loss: the Triton kernel disagrees with the torch fallback on {device} {dtype} ({detail}); "
                f"backend='auto' uses the torch fallback there from now on in this process "
                f"({SELFCHECK_ENV}=0 skips this check)",
                RuntimeWarning,
                stacklevel=3,
            )
        _SELFCHECK_RESULTS[key] = agrees
    return _SELFCHECK_RESULTS[key]


def resolve_backend(backend: str, student: torch.Tensor) -> str:
    if backend == "auto":
        use_triton = (student.is_cuda and student.dtype != torch.float64 and _triton_importable()
                      and _triton_trusted(student.device, student.dtype))  # fmt: skip
        return "triton" if use_triton else "torch"
    if backend == "triton":
        if student.dtype == torch.float64:
            raise TypeError(
                "backend='triton' takes float32, bfloat16 or float16 logits, got torch.float64 "
                "(use backend='torch' for float64)"
            )
        if not student.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"backend='triton' needs CUDA tensors, got device {student.device} (set "
                "TRITON_INTERPRET=1 before importing triton to run the kernel on CPU, or use "
                "backend='torch')"
            )
    return backend


# ---------------------------------------------------------------------------------------- shared arithmetic


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic dtype of every back end: float64 for float64 inputs, float32 for all others."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def blend(student: torch.Tensor, pre: torch.Tensor, alpha: float) -> torch.Tensor:
    """m = α·pre + (1−α)·student, reading only the inputs whose weight is non-zero (so 0·(−inf) never occurs)."""
    if alpha == 0.0:
        return student
    if alpha == 1.0:
        return pre
    return torch.add(pre * alpha, student, alpha=1.0 - alpha)


def term_scales(labels: torch.Tensor | None, num_rows: int, params: LossParams) -> tuple[float, float]:
    """Factors of the CE and KD sums in the reduced loss (1 for "sum"/"none"; 1/count, or 0, for "mean")."""
    if params.reduction != "mean":
        return 1.0, 1.0
    labelled = 0 if labels is None else int((labels != params.ignore_index).sum())
    return (1.0 / labelled if labelled else 0.0), (1.0 / num_rows if num_rows else 0.0)


def reduce_rows(ce: torch.Tensor, kd: torch.Tensor, ce_scale: float, kd_scale: float, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return ce + kd
    return ce.sum() * ce_scale + kd.sum() * kd_scale


# ------------------------------------------------------------------------------------------ torch fallback


def _exp_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row max, exp(x − max), Σ exp) of x along the last dim: softmax = e/Σ, log-sum-exp = max + log Σ."""
    top = x.amax(dim=-1, keepdim=True)
    e = torch.sub(x, top).exp_()
    return top, e, e.sum(dim=-1, keepdim=True)


def _kl_rows(a, top_a, e_a, sum_a, b, top_b, sum_b) -> torch.Tensor:
    """KL(softmax(a) ‖ softmax(b)) per row as E_p[a − b] − (max_a − max_b) − log(Σ_a/Σ_b), the kernel's formula.

    a − b is formed per element and the two normalisers enter as one ratio, so precision holds when the student is
    close to the teacher. A lane where a = −inf adds 0 (p = 0); one where only b is −inf adds +inf, also when
    exp(a − max) underflows to 0 (the module's convention: never 0·inf = NaN). A NaN input still reaches the result.
    """
    terms = torch.sub(a, b).mul_(e_a)
    terms = torch.where(b == -math.inf, math.inf, terms).masked_fill_(a == -math.inf, 0.0)
    expected = terms.sum(dim=-1, keepdim=True) / sum_a
    return (expected - (top_a - top_b) - torch.log(sum_a / sum_b)).squeeze(-1)


def _chunk_forward(s, p, f, y, params: LossParams, ce_scale: float, kd_scale: float, grad: torch.Tensor | None):
    """Per-row CE and KD of one chunk of rows; adds the chunk's d(loss)/d(student) into ``grad`` (zeroed, compute
    dtype) when it is given. About 30 passes over the chunk, each in cache."""
    a, t = params.alpha, params.temperature
    m = blend(s, p, a)
    b = m / t if t != 1.0 else m
    keep = 1.0 - a  # ∂m/∂student
    ce = kd = m.new_zeros(m.shape[0])
    if grad is not None and a == 1.0:
        grad = None  # the student does not enter the loss
    has_kd = params.beta > 0 or params.gamma > 0
    if has_kd or (y is not None and params.ce_weight > 0 and t == 1.0):
        top_b, e_b, sum_b = _exp_stats(b)
    if y is not None and params.ce_weight > 0:
        top_c, e_c, sum_c = (top_b, e_b, sum_b) if t == 1.0 else _exp_stats(m)
        labelled = y != params.ignore_index
        safe_y = torch.where(labelled, y, 0).unsqueeze(1)
        lse = (top_c + sum_c.log()).squeeze(1)
        ce = torch.where(labelled, lse - m.gather(1, safe_y).squeeze(1), 0.0) * params.ce_weight
        if grad is not None:  # ce_weight·(softmax(m) − onehot(y)) on labelled rows, without building the one-hot
            row_weight = (labelled.to(m.dtype) * (params.ce_weight * ce_scale * keep)).unsqueeze(1)
            grad.addcmul_(e_c, row_weight / sum_c).scatter_add_(1, safe_y, -row_weight)
    if has_kd and grad is not None:  # the softmax(b) part of both KD gradients at once: (β+γ)·T·q
        grad.addcmul_(e_b, ((params.beta + params.gamma) * t * kd_scale * keep) / sum_b)
    for teacher, weight in ((p, params.beta), (f, params.gamma)):
        if weight == 0:
            continue
        a_t = teacher / t if t != 1.0 else teacher
        top_a, e_a, sum_a = _exp_stats(a_t)
        kd = kd + _kl_rows(a_t, top_a, e_a, sum_a, b, top_b, sum_b) * (weight * t * t)
        if grad is not None:
            grad.addcmul_(e_a, (-weight * t * kd_scale * keep) / sum_a)
    return ce, kd


def torch_forward(student, pre, fine, labels, params: LossParams, want_grad: bool):
    """The fallback: loss (reduced as asked) and the gradient w.r.t. student (None if not wanted), chunk by chunk."""
    compute = compute_dtype(student.dtype)
    ce_scale, kd_scale = term_scales(labels, student.shape[0], params)
    # the gradient is kept in the compute dtype (float32 for half-precision logits, see the module docstring) and
    # accumulated straight into its rows
    grad = torch.zeros(student.shape, dtype=compute, device=student.device) if want_grad else None
    ce_rows, kd_rows = torch_rows(student, pre, fine, labels, params, ce_scale, kd_scale, grad)
    return reduce_rows(ce_rows, kd_rows, ce_scale, kd_scale, params.reduction), grad


def torch_rows(student, pre, fine, labels, params: LossParams, ce_scale: float, kd_scale: float, grad):
    """Per-row (CE, KD) in the compute dtype, rows taken in cache-sized chunks; adds d(loss)/d(student), with the
    reduction's term scales applied, into ``grad`` (zeroed, compute dtype) when it is not None."""
    num_rows, num_classes = student.shape
    compute = compute_dtype(student.dtype)
    rows_per_chunk = max(1, _CHUNK_BYTES // (num_classes * compute.itemsize))
    ce_rows = torch.empty(num_rows, dtype=compute, device=student.device)
    kd_rows = torch.empty_like(ce_rows)
    for start in range(0, num_rows, rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        s, p, f = (x[rows].to(compute) for x in (student, pre, fine))
        y = None if labels is None else labels[rows]
        chunk_grad = None if grad is None else grad[rows]
        ce_rows[rows], kd_rows[rows] = _chunk_forward(s, p, f, y, params, ce_scale, kd_scale, chunk_grad)
    return ce_rows, kd_rows


class _TorchHybridKD(torch.autograd.Function):
    """Grad-in-forward: forward stores d(loss)/d(student); backward only scales it by the incoming gradient."""

    @staticmethod
    def forward(ctx, student, pre, fine, labels, params: LossParams):
        want_grad = ctx.needs_input_grad[0]
        loss, grad = torch_forward(student, pre, fine, labels, params, want_grad)
        ctx.per_row = params.reduction == "none"
        ctx.grad_dtype = student.dtype
        if want_grad:
            ctx.save_for_backward(grad)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return scale_grad(grad, grad_output, ctx.per_row, ctx.grad_dtype), None, None, None, None


# ----------------------------------------------------------------------------------------------- reference


def reference_loss(student, pre, fine, labels, params: LossParams) -> torch.Tensor:
    """The loss as plain functional ops (autograd does the backward). float32 math, float64 for float64 input."""
    compute = compute_dtype(student.dtype)
    s, p, f = student.to(compute), pre.to(compute), fine.to(compute)
    a, t = params.alpha, params.temperature
    m = blend(s, p, a)
    # Where the loss does not depend on the student (α = 1, or every weight 0) keep it in the graph anyway, so that
    # backward gives a zero gradient like the other back ends; masked −inf entries must not turn 0·x into NaN.
    anchor = torch.where(torch.isfinite(s), s, 0.0).sum(dim=-1) * 0.0
    ce = anchor
    if labels is not None and params.ce_weight > 0:
        ce = ce + F.cross_entropy(m, labels, ignore_index=params.ignore_index, reduction="none") * params.ce_weight
    kd = s.new_zeros(s.shape[0])
    log_q = F.log_softmax(m / t, dim=-1)
    for teacher, weight in ((p, params.beta), (f, params.gamma)):
        if weight > 0:
            p_t = F.softmax(teacher / t, dim=-1)
            # p_t = 0 adds 0, except (the module docstring's convention) a finite teacher whose probability
            # underflowed against a −inf blend: +inf. Where p_t > 0, kl_div already gives +inf there, with its gradient.
            underflow = (log_q == -math.inf) & (teacher > -math.inf)
            kl = torch.where(p_t == 0, torch.where(underflow, math.inf, 0.0), F.kl_div(log_q, p_t, reduction="none"))
            kd = kd + kl.sum(dim=-1) * (weight * t * t)
    if params.reduction != "mean":
        return reduce_rows(ce, kd, 1.0, 1.0, params.reduction)
    # counts as tensors, not Python ints, so torch.compile(reference_loss) traces without a graph break
    labelled = (labels != params.ignore_index).sum() if labels is not None else ce.new_zeros(())
    ce_mean = torch.where(labelled > 0, ce.sum() / labelled.clamp(min=1), 0.0)
    return ce_mean + (kd.sum() / kd.shape[0] if kd.shape[0] else kd.sum())
