"""hybrid_kd_loss, back ends "torch" and "reference" (and "auto" on CPU), against the float64 NumPy reference.

The Triton back end runs the same checks under the interpreter in tests/kernels/test_hybrid_kd.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import hybridft.loss as loss_module
from hybridft import hybrid_kd_loss
from tests._loss_cases import DTYPE_TOLS, LOSS_TOL, assert_matches, bad_calls, make_inputs, masked_inputs, run_backend
from tests._loss_reference import hybrid_kd_reference

BACKENDS = ["torch", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPE_TOLS)
@pytest.mark.parametrize(("rows", "classes"), [(1, 2), (37, 9), (37, 384), (1, 1271), (37, 1271)])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_matches_float64_reference(seed, backend, dtype, atol, rtol, rows, classes, alpha, temperature):
    s, p, f, labels = make_inputs(rows, classes, dtype)
    kwargs = dict(alpha=alpha, beta=0.7, gamma=1.3, temperature=temperature, ce_weight=0.9)
    loss, grad = run_backend(backend, s, p, f, labels, **kwargs)
    ref_loss, ref_grad = hybrid_kd_reference(s, p, f, labels, **kwargs)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert_matches(loss, grad, ref_loss, ref_grad, atol, rtol)
    if alpha == 1.0:
        assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("beta", "gamma", "ce_weight"),
    [(0.0, 1.0, 1.0), (1.0, 0.0, 1.0), (0.0, 0.0, 2.0), (0.5, 2.0, 0.0), (0.0, 0.0, 0.0)],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_term_switches_and_reductions(seed, backend, beta, gamma, ce_weight, reduction):
    s, p, f, labels = make_inputs(37, 384)
    kwargs = dict(alpha=0.3, beta=beta, gamma=gamma, temperature=2.0, ce_weight=ce_weight, reduction=reduction)
    grad_output = torch.randn(37) if reduction == "none" else None  # "none" must honour a per-row incoming grad
    loss, grad = run_backend(backend, s, p, f, labels, grad_output, **kwargs)
    ref_loss, ref_grad = hybrid_kd_reference(s, p, f, labels, **kwargs)
    assert loss.shape == ((37,) if reduction == "none" else ())
    assert_matches(loss, grad, ref_loss, ref_grad, 1e-6, 1e-4, grad_output)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("labelled", ["mixed", "all", "none", "ignored"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_label_patterns(seed, backend, labelled, reduction):
    s, p, f, labels = make_inputs(37, 9, labelled=labelled)
    loss, grad = run_backend(backend, s, p, f, labels, reduction=reduction, alpha=0.3)
    ref_loss, ref_grad = hybrid_kd_reference(s, p, f, labels, reduction=reduction, alpha=0.3)
    assert_matches(loss, grad, ref_loss, ref_grad, 1e-6, 1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mean_counts_each_term_separately(seed, backend):
    """CE over the labelled rows, KD over all rows; a term with count 0 is 0 (no 0/0)."""
    s, p, f, labels = make_inputs(10, 5, labelled="all")
    labels[:7] = -100
    ce_only = hybrid_kd_loss(s, p, f, labels, beta=0, gamma=0, reduction="sum", backend=backend)
    kd_only = hybrid_kd_loss(s, p, f, labels, ce_weight=0, reduction="sum", backend=backend)
    mean = hybrid_kd_loss(s, p, f, labels, backend=backend)
    torch.testing.assert_close(mean, ce_only / 3 + kd_only / 10)
    labels.fill_(-100)
    torch.testing.assert_close(hybrid_kd_loss(s, p, f, labels, beta=0, gamma=0, backend=backend), torch.tensor(0.0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_ignore_index(seed, backend):
    s, p, f, labels = make_inputs(37, 9, labelled="all")
    labels[::2] = 3  # class 3 is "ignored" here, so it never enters CE
    loss, grad = run_backend(backend, s, p, f, labels, ignore_index=3)
    ref_loss, ref_grad = hybrid_kd_reference(s, p, f, labels, ignore_index=3)
    assert_matches(loss, grad, ref_loss, ref_grad, 1e-6, 1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPE_TOLS)
def test_large_vocabulary(seed, backend, dtype, atol, rtol):
    s, p, f, labels = make_inputs(6, 70_007, dtype)
    loss, grad = run_backend(backend, s, p, f, labels, alpha=0.3, temperature=2.0, reduction="sum")
    ref_loss, ref_grad = hybrid_kd_reference(s, p, f, labels, alpha=0.3, temperature=2.0, reduction="sum")
    assert_matches(loss, grad, ref_loss, ref_grad, atol, rtol)


@pytest.mark.parametrize("chunk_rows", [1, 5, 36])
def test_fallback_chunks_rows(seed, monkeypatch, chunk_rows):
    """The row chunking of the fallback is invisible in the result, whatever the chunk boundaries."""
    monkeypatch.setattr(loss_module, "_CHUNK_BYTES", 4 * 1271 * chunk_rows)
    s, p, f, labels = make_inputs(37, 1271)
    for reduction in ("mean", "none"):
        go = torch.randn(37) if reduction == "none" else None
        loss, grad = run_backend("torch", s, p, f, labels, go, alpha=0.3, temperature=4.0, reduction=reduction)
        ref = hybrid_kd_reference(s, p, f, labels, alpha=0.3, temperature=4.0, reduction=reduction)
        assert_matches(loss, grad, *ref, 1e-6, 1e-4, go)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_masked_classes(seed, backend, alpha, temperature):
    s, p, f, labels = masked_inputs(37, 9)
    loss, grad = run_backend(backend, s, p, f, labels, alpha=alpha, temperature=temperature, reduction="sum")
    ref = hybrid_kd_reference(s, p, f, labels, alpha=alpha, temperature=temperature, reduction="sum")
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert_matches(loss, grad, *ref, 1e-9, 1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_teacher_masked_only(seed, backend):
    """A class masked in a teacher only has p = 0: it adds 0 to the KL and the result stays finite."""
    s, p, f, labels = make_inputs(37, 9, torch.float64)
    p[:, :4] = float("-inf")
    loss, grad = run_backend(backend, s, p, f, labels, reduction="none")
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, reduction="none"), 1e-9, 1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_student_masked_only_gives_inf_kl(seed, backend):
    """Documented: a class masked in the blend but not in a teacher makes that row's KL +inf; the grad is finite."""
    s, p, f, _ = make_inputs(4, 9, torch.float64)
    s[0, 2] = float("-inf")
    loss, grad = run_backend(backend, s, p, f, None, reduction="none")
    assert loss[0] == float("inf") and torch.isfinite(loss[1:]).all()
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, hybrid_kd_reference(s, p, f, None, reduction="none")[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_extreme_logits(seed, backend, dtype):
    s, p, f, labels = make_inputs(37, 384, dtype, scale=1.0)
    s, p, f = ((x.float().sign() * 1e4).to(dtype) for x in (s, p, f))  # ±1e4: exp overflows without the shift
    loss, grad = run_backend(backend, s, p, f, labels, alpha=0.3, temperature=0.5, reduction="sum")
    ref = hybrid_kd_reference(s, p, f, labels, alpha=0.3, temperature=0.5, reduction="sum")
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert_matches(loss, grad, *ref, 1e-2, 1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_student_close_to_teachers(seed, backend):
    """Tiny KL and a gradient that is a difference of near-equal probabilities: no catastrophic bf16 error."""
    base = torch.randn(37, 1271) * 2
    s, p, f = ((base + 0.02 * torch.randn_like(base)).bfloat16() for _ in range(3))
    loss, grad = run_backend(backend, s, p, f, None, reduction="sum")
    ref_loss, ref_grad = hybrid_kd_reference(s, p, f, None, reduction="sum")
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-3, atol=1e-6)
    assert float((grad.double() - ref_grad).abs().max()) <= 1e-2 * float(ref_grad.abs().max())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_gradcheck_fallback_float64(seed, reduction, alpha):
    s, p, f, labels = make_inputs(5, 7, torch.float64)
    labels[1] = -100
    student = s.clone().requires_grad_(True)

    def fn(x):
        return hybrid_kd_loss(x, p, f, labels, alpha=alpha, temperature=2.0, reduction=reduction, backend="torch")

    assert torch.autograd.gradcheck(fn, (student,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flat_labels", [False, True])
def test_leading_dims_are_rows(seed, backend, flat_labels):
    s, p, f, labels = make_inputs(0, 11, lead=(3, 5))
    labels = labels.reshape(-1) if flat_labels else labels
    go = torch.randn(3, 5)
    loss, grad = run_backend(backend, s, p, f, labels, go, alpha=0.3, reduction="none")
    assert loss.shape == (3, 5) and grad.shape == (3, 5, 11)
    ref_loss, ref_grad = hybrid_kd_reference(s, p, f, labels, alpha=0.3, reduction="none")
    torch.testing.assert_close(loss.double(), ref_loss, **LOSS_TOL)
    torch.testing.assert_close(grad.double(), ref_grad * go.double().unsqueeze(-1), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_student_gets_gradient(seed, backend):
    s, p, f, labels = make_inputs(8, 9)
    student, pre, fine = (x.clone().requires_grad_(True) for x in (s, p, f))
    hybrid_kd_loss(student, pre, fine, labels, alpha=0.3, backend=backend).backward()
    assert student.grad is not None and pre.grad is None and fine.grad is None
    frozen = hybrid_kd_loss(s, pre, fine, labels, alpha=0.3, backend=backend)  # teachers alone never need grad
    assert not frozen.requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeated_backward_with_retained_graph(seed, backend):
    s, p, f, labels = make_inputs(8, 9)
    student = s.clone().requires_grad_(True)
    loss = hybrid_kd_loss(student, p, f, labels, backend=backend)
    for _ in range(3):
        loss.backward(retain_graph=True)
    (2 * loss).backward()
    torch.testing.assert_close(student.grad.double(), 5 * hybrid_kd_reference(s, p, f, labels)[1], atol=1e-6, rtol=1e-5)


def test_fallback_without_grad_stores_nothing(seed):
    s, p, f, labels = make_inputs(8, 9)
    loss = hybrid_kd_loss(s, p, f, labels, backend="torch")
    assert loss.grad_fn is None
    torch.testing.assert_close(loss.double(), hybrid_kd_reference(s, p, f, labels)[0], **LOSS_TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    s = torch.zeros(0, 5, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long)
    assert hybrid_kd_loss(s, s.detach(), s.detach(), labels, backend=backend).item() == 0.0
    assert hybrid_kd_loss(s, s.detach(), s.detach(), labels, reduction="none", backend=backend).shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_propagates(seed, backend):
    """Documented: NaN is not searched for; it reaches its row's loss and the gradient, never hidden."""
    s, p, f, labels = make_inputs(6, 9)
    f[2, 4] = float("nan")
    loss, grad = run_backend(backend, s, p, f, labels, alpha=0.3, reduction="none")
    assert torch.isnan(loss[2]) and torch.isfinite(loss[[0, 1, 3, 4, 5]]).all()
    assert torch.isnan(grad[2]).all() and torch.isfinite(grad[[0, 1, 3, 4, 5]]).all()
    assert torch.isnan(hybrid_kd_loss(s, p, f, labels, backend=backend))


def test_auto_uses_fallback_on_cpu(seed, monkeypatch):
    calls = []
    monkeypatch.setattr(loss_module, "torch_forward", lambda *a: calls.append(1) or (torch.tensor(0.0), None))
    s, p, f, labels = make_inputs(4, 3)
    hybrid_kd_loss(s, p, f, labels)
    assert calls == [1]


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    s = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"backend='triton' needs CUDA tensors.*TRITON_INTERPRET=1"):
        hybrid_kd_loss(s, s, s, backend="triton")
    with pytest.raises(TypeError, match="backend='triton' takes float32"):
        hybrid_kd_loss(s.double(), s.double(), s.double(), backend="triton")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(bad_calls()))
def test_bad_arguments(backend, case):
    args, kwargs, exc, match = bad_calls()[case]
    kwargs.setdefault("backend", backend)
    with pytest.raises(exc, match=match):
        hybrid_kd_loss(*args, **kwargs)


def test_import_needs_only_torch():
    code = (
        "import sys, hybridft; from hybridft import hybrid_kd_loss; "
        "heavy = [m for m in ('transformers', 'datasets', 'evaluate', 'peft', 'triton') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
