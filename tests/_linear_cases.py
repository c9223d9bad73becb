"""Inputs and the independent float64 reference of hybrid_kd_linear_loss, for tests and bench/kernels.

The reference forms the three logit matrices h·Wᵀ + b in float64 NumPy, takes the loss and its closed-form gradient
w.r.t. the student logits from tests/_loss_reference.py, and maps that gradient back by hand: grad_h = G·W,
grad_W = Gᵀ·h, grad_b = Σ_rows G. No autograd and no library code are involved.
"""

from __future__ import annotations

import torch

from tests._loss_reference import hybrid_kd_reference


def make_heads(rows, hidden, vocab, dtype=torch.float32, *, teacher_hidden=None, bias=True, lead=None, scale=3.0):
    """Fresh (hidden, weight, bias) for student, pre and fine, rounded to dtype; logits come out at about ``scale``.
    ``teacher_hidden``: (H_pre, H_fine), the teachers' own widths (default the student's)."""
    widths = (hidden, *(teacher_hidden or (hidden, hidden)))
    heads = []
    for width in widths:
        shape = (*lead, width) if lead else (rows, width)
        h = torch.randn(shape).to(dtype)
        w = (torch.randn(vocab, width) * (scale / width**0.5)).to(dtype)
        b = torch.randn(vocab).to(dtype) if bias else None
        heads.append((h, w, b))
    return heads


def make_labels(lead, vocab, pattern="mixed"):
    if pattern == "none":
        return None
    labels = torch.randint(0, vocab, lead)
    if pattern == "mixed":
        labels.view(-1)[torch.rand(labels.numel()) < 0.35] = -100
    elif pattern == "ignored":
        labels.fill_(-100)
    return labels


def linear_reference(heads, labels, grad_output=None, **kwargs):
    """(loss, [grad_h, grad_W, grad_b]) in float64; grad_output: the per-row incoming gradient for "none"."""

    def f64(x):
        return None if x is None else x.detach().double().numpy()

    logits = []
    for h, w, b in heads:
        z = f64(h) @ f64(w).T
        logits.append(torch.from_numpy(z if b is None else z + f64(b)))
    loss, grad = hybrid_kd_reference(*logits, labels, **kwargs)
    g = grad.numpy().reshape(-1, grad.shape[-1])
    if grad_output is not None:
        g = g * grad_output.double().numpy().reshape(-1, 1)
    h, w, b = heads[0]
    h = f64(h).reshape(-1, h.shape[-1])
    grads = [torch.from_numpy(g @ f64(w)).reshape(heads[0][0].shape), torch.from_numpy(g.T @ h)]
    grads.append(None if b is None else torch.from_numpy(g.sum(axis=0)))
    return loss, grads
