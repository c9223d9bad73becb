"""Independent float64 reference of the hybrid distillation loss, for tests only.

Written apart from the library on purpose: NumPy, explicit log-sum-exp per row, and the gradient from its closed
form (docs/design.md §2) instead of autograd, so a shared mistake in the torch code cannot hide. Masked classes (−inf)
follow the documented conventions: a teacher class at −inf adds 0 to its KL, a finite one against a −inf blend adds
+inf (even if its probability underflows), a weight of 0 switches its term off (0·(−inf) is never formed).
"""

from __future__ import annotations

import numpy as np
import torch


def _log_softmax(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1, keepdims=True)
    return x - (top + np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True)))


def _blend(student: np.ndarray, pre: np.ndarray, alpha: float) -> np.ndarray:
    if alpha == 0:
        return student
    if alpha == 1:
        return pre
    return alpha * pre + (1 - alpha) * student


def _kl_and_grad(teacher: np.ndarray, m: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """T²·KL(softmax(teacher/T) ‖ softmax(m/T)) per row and its derivative w.r.t. m, T·(q_T − p_T)."""
    log_p, log_q = _log_softmax(teacher / t), _log_softmax(m / t)
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (log_p - log_q), 0.0)
    # a finite teacher class against a −inf blend: +inf, even where p underflowed to 0 (the documented convention)
    terms = np.where(np.isfinite(teacher) & (m == -np.inf), np.inf, terms)
    return t * t * terms.sum(axis=-1), t * (np.exp(log_q) - p)


def hybrid_kd_reference(
    student,
    pre,
    fine,
    labels=None,
    *,
    alpha=0.0,
    beta=1.0,
    gamma=1.0,
    temperature=1.0,
    ce_weight=1.0,
    ignore_index=-100,
    reduction="mean",
):
    """(loss, grad w.r.t. student) in float64 NumPy; logits (..., C) are flattened to rows like the library does."""
    shape = tuple(student.shape)
    s, p, f = (np.asarray(x.detach().double().cpu().reshape(-1, shape[-1]).numpy()) for x in (student, pre, fine))
    m = _blend(s, p, alpha)
    rows = s.shape[0]
    ce, kd, grad_ce, grad_kd = np.zeros(rows), np.zeros(rows), np.zeros_like(s), np.zeros_like(s)
    labelled = np.zeros(rows, dtype=bool)
    if labels is not None and ce_weight > 0:
        y = labels.reshape(-1).cpu().numpy()
        labelled = y != ignore_index
        log_q = _log_softmax(m)
        idx = np.nonzero(labelled)[0]
        ce[idx] = -ce_weight * log_q[idx, y[idx]]
        grad_ce[idx] = ce_weight * np.exp(log_q[idx])
        grad_ce[idx, y[idx]] -= ce_weight
    for teacher, weight in ((p, beta), (f, gamma)):
        if weight > 0:
            kl, g = _kl_and_grad(teacher, m, temperature)
            kd += weight * kl
            grad_kd += weight * g
    if reduction == "mean":
        n_lab = int(labelled.sum())
        loss = (ce.sum() / n_lab if n_lab else 0.0) + (kd.sum() / rows if rows else 0.0)
        grad = (grad_ce / n_lab if n_lab else 0.0 * grad_ce) + (grad_kd / rows if rows else 0.0 * grad_kd)
    elif reduction == "sum":
        loss, grad = ce.sum() + kd.sum(), grad_ce + grad_kd
    else:
        loss, grad = (ce + kd).reshape(shape[:-1]), grad_ce + grad_kd
    grad = (1 - alpha) * grad
    return torch.as_tensor(np.asarray(loss)), torch.from_numpy(np.ascontiguousarray(grad)).reshape(shape)
