"""The hybrid distillation loss of three linear heads, from hidden states: vocabulary logits are never held whole.

    hybrid_kd_linear_loss(h_s, W_s, h_pre, W_pre, h_fine, W_fine, labels, ...)
        == hybrid_kd_loss(h_s·W_sᵀ + b_s, h_pre·W_preᵀ + b_pre, h_fine·W_fineᵀ + b_fine, labels, ...)

with the same loss, reductions, conventions and argument checks as ``hybridft.loss.hybrid_kd_loss`` (see its
module docstring). Hidden states are (N, H) or (..., H), weights (V, H) as ``nn.Linear`` stores them, biases (V,) or
None. Each teacher may have its own H (cached hidden states of a larger teacher). Only the student's hidden states,
weight and bias get gradients; the teachers are constants. A tied weight (the input embedding) works like any
other: its gradient from this loss adds to the embedding's.

For a language model the logits are (tokens × vocabulary): 4096 tokens over SmolLM2's 49,152 words are 805 MB
per model in float32, and three models, their softmaxes and the gradient need several GB. Here the rows go in
chunks. Per chunk of R rows:

    logits   the three (R, V) blocks by matmul (plus bias) in float32, accumulated in float32
    rows     the row math of hybrid_kd_loss on them, its gradient d(loss)/d(logits) formed in the same pass
    grads    grad_h[chunk] = dlogits·W_s,  grad_W += dlogitsᵀ·h_s,  grad_b += Σ_rows dlogits

so the extra memory is four (R, V) float32 blocks, reused from chunk to chunk, beside the gradients themselves.
Backward only scales the stored gradients by ``grad_output`` (grad-in-forward, as Liger-Kernel's fused-linear
losses do). ``reduction="none"`` cannot know the per-row factors in forward, so its backward runs the chunks again
with them (twice the matmuls of a step, nothing stored but the inputs).

Chunk rows, unless ``chunk_size`` says otherwise (`auto_chunk_rows`): the chunk's logits take no more elements than
the hidden states N·H or 2^24 (64 MiB in float32), whichever is larger, but at least 128 rows (when N has them), so
that the weight-gradient matmul, which reads and writes the whole (V, H) gradient once per chunk, stays
compute-bound. On this project's 2-core CPU, at H = 576 and V = 49,152, 256-row chunks ran the three matmuls at
48–63 GFLOP/s against 43–58 for whole 4096-row ones, and 64-row chunks (Liger's rule: logits no larger than the
hidden states) at 24–46.

Precision: every matmul accumulates in float32 and its result is not rounded to the input dtype (rounding bf16
logits before the softmax is the trap that costs 4–23 % gradient error at V = 32k, Liger-Kernel#1432). Half-precision
weights are therefore copied to float32 once per call, 4·V·H bytes per head (113 MB per head at SmolLM2's 576 ×
49,152), and the hidden states chunk by chunk. Gradients are accumulated in float32 and cast to their parameter's
dtype once, after ``grad_output`` is applied. float64 inputs compute in float64.

Back ends: ``"torch"`` (the chunked fallback; its row math is ``hybridft.loss.torch_rows``), ``"triton"`` (chunk
logits by matmul, then the fused row kernel run in place on the student block, which it overwrites with the
gradient; CUDA, or CPU under ``TRITON_INTERPRET=1``), ``"reference"`` (``F.linear`` + ``reference_loss``,
differentiated by autograd: (N, V) tensors and all) and ``"auto"`` (as for ``hybrid_kd_loss``).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from hybridft.loss import compute_dtype, reduce_rows, reference_loss, resolve_backend, term_scales, torch_rows
from hybridft.loss_checks import LossParams, check_float_tensor, check_labels, check_scalars, scale_grad

__all__ = ["MIN_CHUNK_ROWS", "auto_chunk_rows", "hybrid_kd_linear_loss"]

MIN_CHUNK_ROWS = 128
_CHUNK_ELEMENTS = 1 << 24
_HEADS = ("student", "pre", "fine")


def hybrid_kd_linear_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    pre_hidden: torch.Tensor,
    pre_weight: torch.Tensor,
    fine_hidden: torch.Tensor,
    fine_weight: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    student_bias: torch.Tensor | None = None,
    pre_bias: torch.Tensor | None = None,
    fine_bias: torch.Tensor | None = None,
    alpha: float = 0.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    ce_weight: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    backend: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """hybrid_kd_loss of the logits ``hidden·weightᵀ + bias`` of the student and both teachers (see module doc).

    ``chunk_size``: rows per chunk (default `auto_chunk_rows`). Labels have the hidden states' leading shape or
    (N,). Returns a scalar, or the per-row losses with the hidden states' leading shape for "none".
    """
    params = check_scalars(alpha, beta, gamma, temperature, ce_weight, ignore_index, reduction, backend)
    heads = _check_heads(
        (student_hidden, student_weight, student_bias),
        (pre_hidden, pre_weight, pre_bias),
        (fine_hidden, fine_weight, fine_bias),
    )
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    lead_shape = student_hidden.shape[:-1]
    vocab = student_weight.shape[0]
    flat_labels = check_labels(labels, lead_shape, vocab, student_hidden.device, ignore_index, "student_hidden")
    # rows: (N, H) views; teachers are constants of this loss, detached so they get no gradient
    (h_s, w_s, b_s), *teachers = heads
    rows = [h_s.reshape(-1, h_s.shape[-1]), w_s, b_s]
    for h, w, b in teachers:
        rows += [h.detach().reshape(-1, h.shape[-1]), w.detach(), None if b is None else b.detach()]

    # the row math runs on float32 logits whatever the input dtype (float64 on float64): "auto" asks about those
    compute = compute_dtype(student_hidden.dtype)
    probe = student_hidden.new_empty(0, dtype=compute) if backend == "auto" else student_hidden
    name = resolve_backend(backend, probe)
    if name == "reference":
        loss = reference_linear_loss(*rows, flat_labels, params)
    else:
        chunk = chunk_size or auto_chunk_rows(rows[0].shape[0], vocab, rows[0].shape[1])
        loss = _FusedLinearHybridKD.apply(*rows, flat_labels, params, chunk, name)
    return loss.reshape(lead_shape) if reduction == "none" else loss


def auto_chunk_rows(num_rows: int, vocab: int, hidden: int) -> int:
    """Rows per chunk: logits of at most max(N·H, 2^24) elements, at least MIN_CHUNK_ROWS rows, at most N (module
    doc). A power of two, so that the matmuls see the same few shapes from call to call."""
    budget = max(num_rows * hidden, _CHUNK_ELEMENTS) // max(vocab, 1)
    rows = 1 << max(budget, 1).bit_length() - 1
    return max(1, min(num_rows, max(rows, MIN_CHUNK_ROWS)))


# ----------------------------------------------------------------------------------------------------- checks


def _check_heads(*heads) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Types, shapes, dtypes and devices of the three (hidden, weight, bias); errors name the bad argument."""
    student_hidden = heads[0][0]
    for prefix, (hidden, weight, bias) in zip(_HEADS, heads, strict=True):
        for kind, x in (("hidden", hidden), ("weight", weight), ("bias", bias)):
            name = f"{prefix}_{kind}"
            if x is None and kind == "bias":
                continue
            check_float_tensor(name, x)
            if x is not student_hidden and x.dtype != student_hidden.dtype:
                raise TypeError(f"{name} must have the dtype of student_hidden ({student_hidden.dtype}), got {x.dtype}")
            if x.device != student_hidden.device:
                raise ValueError(
                    f"{name} must be on the device of student_hidden ({student_hidden.device}), got {x.device}"
                )
        if hidden.dim() < 2:
            raise ValueError(f"{prefix}_hidden must have shape (N, H) or (..., H), got {tuple(hidden.shape)}")
        if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
            raise ValueError(
                f"{prefix}_weight must have shape (V, H) with H = {prefix}_hidden's last dim {hidden.shape[-1]}, "
                f"got {tuple(weight.shape)}"
            )
        vocab = heads[0][1].shape[0]
        if weight.shape[0] != vocab:
            raise ValueError(
                f"{prefix}_weight must have student_weight's vocabulary size V = {vocab} rows, got {tuple(weight.shape)}"
            )
        if bias is not None and bias.shape != (vocab,):
            raise ValueError(f"{prefix}_bias must have shape ({vocab},) or be None, got {tuple(bias.shape)}")
        if hidden.shape[:-1] != student_hidden.shape[:-1]:
            raise ValueError(
                f"{prefix}_hidden must have the leading shape of student_hidden {tuple(student_hidden.shape[:-1])}, "
                f"got {tuple(hidden.shape[:-1])}"
            )
    return list(heads)


# ----------------------------------------------------------------------------------------------- reference


def reference_linear_loss(h_s, w_s, b_s, h_p, w_p, b_p, h_f, w_f, b_f, labels, params: LossParams) -> torch.Tensor:
    """F.linear of each head in the compute dtype, then the reference loss; autograd does the rest."""
    compute = compute_dtype(h_s.dtype)

    def logits(h, w, b):
        return torch.nn.functional.linear(h.to(compute), w.to(compute), None if b is None else b.to(compute))

    return reference_loss(logits(h_s, w_s, b_s), logits(h_p, w_p, b_p), logits(h_f, w_f, b_f), labels, params)


# ------------------------------------------------------------------------------------------------ the chunks


def _logits_into(out: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """out = hidden·weightᵀ (+ bias) in out's dtype; the hidden chunk is cast first, the weight already is."""
    hidden = hidden.to(out.dtype)
    if bias is None:
        return torch.mm(hidden, weight.t(), out=out)
    return torch.addmm(bias, hidden, weight.t(), out=out)


def linear_forward(inputs, labels, params: LossParams, chunk_rows: int, backend: str, needs, row_weight=None):
    """Loss and the float32 (float64) gradients of (student_hidden, student_weight, student_bias) named in
    ``needs`` (None for the others), chunk by chunk. ``row_weight``: per-row factors of the gradient, for the
    backward of reduction "none" (the loss is then per row and unscaled)."""
    h_s, w_s, b_s, h_p, w_p, b_p, h_f, w_f, b_f = inputs
    num_rows, vocab = h_s.shape[0], w_s.shape[0]
    device = h_s.device
    compute = compute_dtype(h_s.dtype)
    # weights and biases in the compute dtype once (no copy when they already are)
    w_s, w_p, w_f = (w.to(compute) for w in (w_s, w_p, w_f))
    b_s, b_p, b_f = (None if b is None else b.to(compute) for b in (b_s, b_p, b_f))
    student_read = params.alpha < 1.0  # with α = 1 the student is not read (its gradient is 0)
    want_grad = student_read and any(needs)
    per_row = row_weight is not None or params.reduction == "none"
    scaled = row_weight is None and params.reduction == "mean"  # else the row terms stay unscaled
    if backend == "triton":
        from hybridft.kernels.hybrid_kd import hybrid_kd_forward, term_scales_tensor  # noqa: PLC0415  lazy: triton is needed here

        # the whole batch's "mean" factors, counted on the device (no host sync); None: unscaled rows
        scales = term_scales_tensor(labels, num_rows, params, device) if scaled else None
    else:
        ce_scale, kd_scale = term_scales(labels, num_rows, params) if scaled else (1.0, 1.0)

    grad_h = torch.zeros(h_s.shape, dtype=compute, device=device) if needs[0] else None
    grad_w = torch.zeros(w_s.shape, dtype=compute, device=device) if needs[1] else None
    grad_b = torch.zeros(vocab, dtype=compute, device=device) if needs[2] else None
    ce_rows = torch.zeros(num_rows, dtype=compute, device=device)
    kd_rows = torch.zeros_like(ce_rows)
    # the four (R, V) blocks, allocated once and reused by every chunk
    width = min(chunk_rows, max(num_rows, 1))
    blocks = {name: torch.empty(width, vocab, dtype=compute, device=device) for name in _HEADS}
    dlogits = None
    if want_grad and backend != "triton":  # the kernel writes the gradient over the student block instead
        dlogits = torch.empty(width, vocab, dtype=compute, device=device)

    for start in range(0, num_rows, chunk_rows):
        rows = slice(start, start + chunk_rows)
        count = min(chunk_rows, num_rows - start)
        pre = _logits_into(blocks["pre"][:count], h_p[rows], w_p, b_p)
        fine = _logits_into(blocks["fine"][:count], h_f[rows], w_f, b_f)
        student = _logits_into(blocks["student"][:count], h_s[rows], w_s, b_s) if student_read else pre
        y = None if labels is None else labels[rows]
        if backend == "triton":
            loss_rows, grad = hybrid_kd_forward(
                student, pre, fine, y, params, need_grad=want_grad, scales=scales, grad=student if want_grad else None
            )
            ce_rows[rows] = loss_rows  # already scaled for the reduction
        else:
            grad = None
            if want_grad:
                grad = dlogits[:count].zero_()
            ce_rows[rows], kd_rows[rows] = torch_rows(student, pre, fine, y, params, ce_scale, kd_scale, grad)
        if not want_grad:
            continue
        if row_weight is not None:
            grad.mul_(row_weight[rows].to(compute).unsqueeze(1))
        hidden = h_s[rows].to(compute)
        if grad_h is not None:
            torch.mm(grad, w_s, out=grad_h[rows])
        if grad_w is not None:
            grad_w.addmm_(grad.t(), hidden)
        if grad_b is not None:
            grad_b += grad.sum(dim=0)

    if backend == "triton":
        loss = ce_rows if per_row else ce_rows.sum()
    else:
        loss = reduce_rows(ce_rows, kd_rows, ce_scale, kd_scale, "none" if per_row else params.reduction)
    return loss, (grad_h, grad_w, grad_b)


class _FusedLinearHybridKD(torch.autograd.Function):
    """Grad-in-forward for "mean"/"sum"; "none" recomputes its chunks in backward with the per-row factors."""

    @staticmethod
    def forward(ctx, h_s, w_s, b_s, h_p, w_p, b_p, h_f, w_f, b_f, labels, params: LossParams, chunk_rows, backend):
        inputs = (h_s, w_s, b_s, h_p, w_p, b_p, h_f, w_f, b_f)
        needs = tuple(ctx.needs_input_grad[:3])
        ctx.per_row = params.reduction == "none"
        ctx.dtypes = (h_s.dtype, w_s.dtype, None if b_s is None else b_s.dtype)
        ctx.setup = (labels, params, chunk_rows, backend, needs)
        if ctx.per_row:
            loss, _ = linear_forward(inputs, labels, params, chunk_rows, backend, (False, False, False))
            if any(needs):
                ctx.save_for_backward(*inputs)
            return loss
        loss, grads = linear_forward(inputs, labels, params, chunk_rows, backend, needs)
        ctx.save_for_backward(*(g for g in grads if g is not None))
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        labels, params, chunk_rows, backend, needs = ctx.setup
        saved = iter(ctx.saved_tensors)
        if ctx.per_row:
            inputs = tuple(saved) if any(needs) else ()
            if inputs:
                _, grads = linear_forward(inputs, labels, params, chunk_rows, backend, needs, row_weight=grad_output)
            else:
                grads = (None, None, None)
            out = [None if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.dtypes, strict=True)]
        else:
            out = [
                scale_grad(next(saved), grad_output, False, dtype) if need else None
                for need, dtype in zip(needs, ctx.dtypes, strict=True)
            ]
        return (*out, *(None,) * 10)
