"""Inputs, tolerances and comparison helpers shared by the loss tests of every back end."""

from __future__ import annotations

import pytest
import torch

from hybridft import hybrid_kd_loss

# Arithmetic is float32 for every input dtype, so the loss gets one tolerance; the gradient comes back in the input
# dtype and is compared relative to its largest entry (atol) and elementwise (rtol): bf16 keeps 8 bits, fp16 11.
DTYPE_TOLS = [
    pytest.param(torch.float32, 1e-6, 1e-4, id="fp32"),
    pytest.param(torch.bfloat16, 8e-3, 1.6e-2, id="bf16"),
    pytest.param(torch.float16, 1e-3, 2e-3, id="fp16"),
]
LOSS_TOL = {"atol": 1e-5, "rtol": 5e-5}


def make_inputs(rows, classes, dtype=torch.float32, *, scale=3.0, labelled="mixed", lead=None, device="cpu"):
    """Fresh random logits (already rounded to dtype) and labels; labelled in {"mixed", "all", "none", "ignored"}."""
    shape = (*lead, classes) if lead else (rows, classes)
    s, p, f = ((torch.randn(shape) * scale).to(device=device, dtype=dtype) for _ in range(3))
    labels = None if labelled == "none" else torch.randint(0, classes, shape[:-1])
    if labelled == "mixed":
        labels.view(-1)[torch.rand(labels.numel()) < 0.35] = -100
    elif labelled == "ignored":
        labels.fill_(-100)
    return s, p, f, None if labels is None else labels.to(device)


def masked_inputs(rows, classes, dtype=torch.float64, device="cpu"):
    """QA-style padding: the same classes are −inf in student and teachers; a label never points at one."""
    s, p, f, labels = make_inputs(rows, classes, dtype, labelled="mixed")
    mask = torch.rand(rows, classes) < 0.5
    mask[torch.arange(rows), torch.randint(0, classes, (rows,))] = False  # at least one finite class per row
    for x in (s, p, f):
        x.masked_fill_(mask, float("-inf"))
    finite = (~mask).float().multinomial(1).squeeze(1)
    labels = torch.where(labels == -100, labels, finite)
    return s.to(device), p.to(device), f.to(device), labels.to(device)


def run_backend(backend, s, p, f, labels, grad_output=None, **kwargs):
    """Loss and student gradient of one back end (grad_output: per-row incoming gradient for "none")."""
    student = s.clone().requires_grad_(True)
    loss = hybrid_kd_loss(student, p, f, labels, backend=backend, **kwargs)
    loss.backward(torch.ones_like(loss) if grad_output is None else grad_output.to(loss.device))
    return loss.detach().cpu(), student.grad.cpu()


def assert_matches(loss, grad, ref_loss, ref_grad, atol, rtol, grad_output=None):
    """Loss to LOSS_TOL; gradient to atol (relative to its largest entry) and rtol."""
    torch.testing.assert_close(loss.double(), ref_loss.double(), **LOSS_TOL)
    if grad_output is not None:
        ref_grad = ref_grad * grad_output.double().cpu().unsqueeze(-1)
    assert grad.shape == ref_grad.shape
    scale = float(ref_grad.abs().max())
    torch.testing.assert_close(grad.double(), ref_grad, atol=atol * scale + 1e-12, rtol=rtol)


def bad_calls():
    """Every bad argument: name -> (positional args, keyword args, exception type, message pattern)."""
    s = torch.randn(4, 5)
    y = torch.tensor([0, 1, -100, 4])
    cases = {
        "student int": ((s.long(), s, s, y), {}, TypeError, "student_logits must be a floating-point"),
        "pre not tensor": ((s, s.numpy(), s, y), {}, TypeError, "pre_logits must be a torch.Tensor"),
        "1-D logits": ((s[0], s[0], s[0]), {}, ValueError, r"student_logits must have shape \(N, C\)"),
        "shape": ((s, s[:, :4], s, y), {}, ValueError, "pre_logits must have the shape of student_logits"),
        "dtype": ((s, s, s.double(), y), {}, TypeError, "fine_logits must have the dtype of student_logits"),
        "device": ((s, s.to("meta"), s, y), {}, ValueError, "pre_logits must be on the device"),
        "labels dtype": ((s, s, s, y.int()), {}, TypeError, "labels must be an int64 tensor"),
        "labels float": ((s, s, s, y.float()), {}, TypeError, "labels must be an int64 tensor"),
        "labels shape": ((s, s, s, y[:3]), {}, ValueError, r"labels must have shape \(4,\)"),
        "labels list": ((s, s, s, [0, 1, 2, 3]), {}, TypeError, "labels must be a torch.Tensor or None"),
        "label high": ((s, s, s, torch.tensor([0, 5, 1, 1])), {}, ValueError, r"labels must be in \[0, 5\).*got 5"),
        "label neg": ((s, s, s, torch.tensor([0, 1, -1, 1])), {}, ValueError, r"labels must be in \[0, 5\).*-1"),
        "label device": ((s, s, s, y.to("meta")), {}, ValueError, "labels must be on the device"),
    }
    for name, value, exc, match in [
        ("alpha", -0.1, ValueError, r"alpha must be in \[0, 1\]"),
        ("alpha", 1.5, ValueError, r"alpha must be in"),
        ("alpha", float("nan"), ValueError, "alpha must be finite"),
        ("alpha", "0.3", TypeError, "alpha must be a real"),
        ("beta", -1.0, ValueError, "beta must be >= 0"),
        ("gamma", -1e-3, ValueError, "gamma must be >= 0"),
        ("ce_weight", -2, ValueError, "ce_weight must be >= 0"),
        ("beta", True, TypeError, "beta must be a real"),
        ("temperature", 0.0, ValueError, "temperature must be > 0"),
        ("temperature", -1.0, ValueError, "temperature must be > 0"),
        ("temperature", float("inf"), ValueError, "temperature must be finite"),
        ("ignore_index", -100.0, TypeError, "ignore_index must be an int"),
        ("reduction", "avg", ValueError, "reduction must be one of"),
        ("backend", "cuda", ValueError, "backend must be one of"),
    ]:
        cases[f"{name}={value!r}"] = ((s, s, s, y), {name: value}, exc, match)
    return cases
