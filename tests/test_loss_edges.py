"""Edge cases of hybrid_kd_loss on every back end (the Triton one under TRITON_INTERPRET=1 here): strided labels and
logits, half precision under a loss scaler, the −inf convention, and the CUDA self-check of backend="auto"."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import hybridft.loss as loss_module
from hybridft import hybrid_kd_loss
from tests._loss_cases import DTYPE_TOLS, assert_matches, make_inputs, run_backend
from tests._loss_reference import hybrid_kd_reference

BACKENDS = ["torch", "reference", pytest.param("triton", marks=pytest.mark.triton)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPE_TOLS)
def test_strided_labels_and_logits_match_contiguous_copies(seed, backend, dtype, atol, rtol):
    rows, classes = 23, 11
    s = (torch.randn(rows, 2 * classes + 3) * 3).to(dtype)[:, 1 : 2 * classes + 1 : 2]  # element stride 2
    p = (torch.randn(classes, rows) * 3).to(dtype).t()  # column-major
    f = (torch.randn(rows + 4, classes) * 3).to(dtype)[2:-2]  # an offset into its storage
    pairs = torch.randint(0, classes, (rows, 2))
    pairs[::3, 1] = -100
    labels = pairs[:, 1]  # a column: stride 2
    assert labels.stride() == (2,) and s.stride(-1) == 2 and p.stride(-1) == rows
    go = torch.randn(rows)
    strided = run_backend(backend, s, p, f, labels, go, reduction="none", alpha=0.3, temperature=2.0)
    dense = run_backend(backend, s.contiguous(), p.contiguous(), f, labels.contiguous(), go, reduction="none",
                        alpha=0.3, temperature=2.0)  # fmt: skip
    torch.testing.assert_close(strided[0], dense[0], rtol=1e-6, atol=1e-6)  # summation order may differ, no more
    torch.testing.assert_close(strided[1], dense[1])  # the dtype's default tolerance: at most one rounding apart
    ref = hybrid_kd_reference(s, p, f, labels, alpha=0.3, temperature=2.0, reduction="none")
    assert_matches(*strided, *ref, atol, rtol, go)


def _scaled(backend, dtype, scale: float, rows=64, classes=50):
    s, p, f, labels = make_inputs(rows, classes, dtype)
    student = s.clone().requires_grad_(True)
    loss = hybrid_kd_loss(student, p, f, labels, alpha=0.3, temperature=2.0, backend=backend)
    (loss * scale).backward()  # GradScaler semantics: backward of scale·loss, grad_output = scale
    _ref_loss, ref_grad = hybrid_kd_reference(s, p, f, labels, alpha=0.3, temperature=2.0)
    return student.grad, ref_grad * scale


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.triton)])
@pytest.mark.parametrize("scale", [2.0**15, 2.0**16, 2.0**24])
def test_fp16_gradient_under_a_loss_scale_is_finite_and_accurate(seed, backend, scale):
    grad, ref = _scaled(backend, torch.float16, scale)
    assert grad.dtype == torch.float16
    reachable = ref.abs() < 65504  # a scaled gradient beyond float16's range must overflow; GradScaler then backs off
    assert reachable.all() or scale > 2.0**16
    assert torch.isfinite(grad[reachable]).all()
    # one rounding to float16 of the float32 gradient: relative 2^-11 (2^-10 allowed), or float16's subnormal
    # spacing near 0, plus the float32 arithmetic's absolute error (~1e-7 of the row's largest entry, scaled)
    err = (grad.double() - ref).abs()[reachable]
    bound = ref.abs()[reachable] * 2.0**-10 + 2.0**-23 + 1e-6 * float(ref.abs()[reachable].max())
    assert (err <= bound).all(), float((err - bound).max())
    nonzero = ref.abs()[reachable] >= 2.0**-14  # normal float16 range: nothing there flushes to 0
    assert (grad.double()[reachable][nonzero] != 0).all()


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.triton)])
def test_bf16_gradient_is_rounded_once(seed, backend):
    grad, ref = _scaled(backend, torch.bfloat16, 1.0, rows=128, classes=64)
    once = ref.to(torch.bfloat16).double()  # the exact gradient rounded once to bfloat16
    normwise = float((grad.double() - ref).norm() / ref.norm())
    floor = float((once - ref).norm() / ref.norm())
    # the inputs are already bf16, so the float32 arithmetic is near exact and the only error left is the final
    # rounding: normwise within 10 % of rounding the float64 gradient once (two roundings gave about 2×)
    assert normwise <= 1.1 * floor + 1e-6, (normwise, floor)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_minus_inf_student_against_an_underflowing_teacher_is_inf_not_nan(seed, backend, dtype):
    """Teacher class finite but exp(a − max) underflows in float32; the blend is −inf there: KL = +inf, no NaN."""
    rows, classes = 5, 7
    s, p, f, labels = make_inputs(rows, classes, torch.float32)
    p[:, 3] = p.max(dim=1).values - 150.0  # exp(−150) ≈ 7e-66: 0 in float32, > 0 in float64
    f[:, 3] = f.max(dim=1).values - 150.0
    if dtype == torch.float16:  # −150 below the max stays representable; the probabilities still underflow
        s, p, f = s.to(dtype), p.to(dtype), f.to(dtype)
    s[0, 3] = -math.inf
    s[2, 3] = -math.inf
    labels[0], labels[2] = 1, -100  # labels never point at a masked class
    loss, grad = run_backend(backend, s, p, f, labels, reduction="none")
    assert loss[0] == math.inf and loss[2] == math.inf
    assert torch.isfinite(loss[[1, 3, 4]]).all() and not torch.isnan(loss).any()
    assert torch.isfinite(grad).all()
    ref_loss, _ref_grad = hybrid_kd_reference(s, p, f, labels, reduction="none")
    assert ref_loss[0] == math.inf and ref_loss[2] == math.inf
    torch.testing.assert_close(loss[[1, 3, 4]].double(), ref_loss[[1, 3, 4]], atol=1e-4, rtol=1e-4)


@pytest.mark.triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_selfcheck_passes_for_the_kernel(dtype):
    agrees, detail = loss_module.triton_selfcheck("cpu", dtype)
    assert agrees, detail


@pytest.mark.triton
def test_selfcheck_catches_a_wrong_kernel(monkeypatch):
    import hybridft.kernels.hybrid_kd as kernel

    real = kernel.hybrid_kd_forward

    def off_by_a_bit(*args, **kwargs):
        loss, grad = real(*args, **kwargs)
        return loss * 1.01, grad

    monkeypatch.setattr(kernel, "hybrid_kd_forward", off_by_a_bit)
    agrees, detail = loss_module.triton_selfcheck("cpu", torch.float32)
    assert not agrees and detail.startswith("loss ")

    def crashes(*args, **kwargs):
        raise RuntimeError("no kernel image is available")

    monkeypatch.setattr(kernel, "hybrid_kd_forward", crashes)
    assert loss_module.triton_selfcheck("cpu", torch.float32) == (False, "RuntimeError: no kernel image is available")


def test_auto_warns_once_and_falls_back_when_the_check_fails(monkeypatch):
    calls = []
    monkeypatch.setattr(loss_module, "_SELFCHECK_RESULTS", {})
    monkeypatch.setattr(loss_module, "triton_selfcheck", lambda d, t: calls.append((d, t)) or (False, "loss 1 vs 2"))
    monkeypatch.delenv(loss_module.SELFCHECK_ENV, raising=False)
    with pytest.warns(
        RuntimeWarning, match=r"disagrees with the torch fallback on cuda:0 torch.float16 \(loss 1 vs 2\)"
    ):
        assert loss_module._triton_trusted("cuda:0", torch.float16) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call neither checks nor warns again
        assert loss_module._triton_trusted("cuda:0", torch.float16) is False
    assert calls == [("cuda:0", torch.float16)]
    monkeypatch.setattr(loss_module, "triton_selfcheck", lambda d, t: (True, ""))
    assert loss_module._triton_trusted("cuda:0", torch.bfloat16) is True  # per dtype
    monkeypatch.setenv(loss_module.SELFCHECK_ENV, "0")
    monkeypatch.setattr(loss_module, "triton_selfcheck", lambda d, t: pytest.fail("the check is off"))
    assert loss_module._triton_trusted("cuda:1", torch.float32) is True


def test_auto_on_cpu_never_runs_the_check(seed, monkeypatch):
    monkeypatch.setattr(loss_module, "triton_selfcheck", lambda d, t: pytest.fail("no check on CPU"))
    s, p, f, labels = make_inputs(4, 5)
    assert torch.isfinite(hybrid_kd_loss(s, p, f, labels, backend="auto"))
