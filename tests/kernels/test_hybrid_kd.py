"""The fused Triton kernel against the float64 NumPy reference: on CUDA, or on CPU under TRITON_INTERPRET=1.

The interpreter runs every program in Python, so shapes stay small; the kernel's block size is forced down
(BLOCK) so that a 1271-column row streams through several column blocks, like a 128k row on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hybridft import hybrid_kd_loss
from hybridft.loss import _check_scalars
from tests._loss_cases import DTYPE_TOLS, assert_matches, bad_calls, make_inputs, masked_inputs, run_backend
from tests._loss_reference import hybrid_kd_reference

hybrid_kd_module = pytest.importorskip("hybridft.kernels.hybrid_kd", reason="triton is not installed")

pytestmark = pytest.mark.triton
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BLOCK = 256  # 1271 columns → 5 blocks, the last one partial


def run_kernel(s, p, f, labels, grad_output=None, block_size=BLOCK, **kwargs):
    """Call the kernel's functional entry with a forced block size; kwargs are hybrid_kd_loss's scalars."""
    args = {"alpha": 0.0, "beta": 1.0, "gamma": 1.0, "temperature": 1.0, "ce_weight": 1.0, "ignore_index": -100}
    args.update(kwargs)
    reduction = args.pop("reduction", "mean")
    params = _check_scalars(*args.values(), reduction, "triton")
    student = s.clone().requires_grad_(True)
    loss = hybrid_kd_module.hybrid_kd(student, p, f, labels, params, block_size=block_size)
    loss.backward(torch.ones_like(loss) if grad_output is None else grad_output.to(loss.device))
    return loss.detach().cpu(), student.grad.cpu()


@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPE_TOLS)
@pytest.mark.parametrize(("rows", "classes"), [(1, 2), (37, 9), (3, 384), (4, 1271)])
def test_dtypes_and_shapes(seed, dtype, atol, rtol, rows, classes):
    s, p, f, labels = make_inputs(rows, classes, dtype, device=DEVICE)
    kwargs = dict(alpha=0.3, beta=0.7, gamma=1.3, temperature=2.0, ce_weight=0.9)
    loss, grad = run_kernel(s, p, f, labels, **kwargs)
    ref_loss, ref_grad = hybrid_kd_reference(s, p, f, labels, **kwargs)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert_matches(loss, grad, ref_loss, ref_grad, atol, rtol)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_alpha_and_temperature(seed, alpha, temperature):
    s, p, f, labels = make_inputs(4, 1271, device=DEVICE)
    kwargs = dict(alpha=alpha, beta=0.7, gamma=1.3, temperature=temperature, ce_weight=0.9)
    loss, grad = run_kernel(s, p, f, labels, **kwargs)
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, **kwargs), 1e-6, 1e-4)
    if alpha == 1.0:
        assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize(
    ("beta", "gamma", "ce_weight", "temperature"),
    [(0.0, 1.0, 1.0, 1.0), (1.0, 0.0, 1.0, 2.0), (0.0, 0.0, 2.0, 1.0), (0.0, 0.0, 2.0, 3.0), (0.5, 2.0, 0.0, 2.0)],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_term_switches_and_reductions(seed, beta, gamma, ce_weight, temperature, reduction):
    s, p, f, labels = make_inputs(37, 9, device=DEVICE)
    kwargs = dict(alpha=0.3, beta=beta, gamma=gamma, temperature=temperature, ce_weight=ce_weight, reduction=reduction)
    grad_output = torch.randn(37) if reduction == "none" else None
    loss, grad = run_kernel(s, p, f, labels, grad_output, **kwargs)
    assert loss.shape == ((37,) if reduction == "none" else ())
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, **kwargs), 1e-6, 1e-4, grad_output)


@pytest.mark.parametrize("labelled", ["mixed", "all", "none", "ignored"])
def test_label_patterns(seed, labelled):
    s, p, f, labels = make_inputs(37, 9, labelled=labelled, device=DEVICE)
    loss, grad = run_kernel(s, p, f, labels, alpha=0.3)
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, alpha=0.3), 1e-6, 1e-4)


@pytest.mark.parametrize(("dtype", "atol", "rtol"), [DTYPE_TOLS[0], DTYPE_TOLS[1]])
def test_large_vocabulary_default_blocks(seed, dtype, atol, rtol):
    """The launcher's own block choice (2048 columns) over a > 64k vocabulary: 35 blocks, the last one partial."""
    s, p, f, labels = make_inputs(2, 70_007, dtype, device=DEVICE)
    kwargs = dict(alpha=0.3, temperature=2.0, reduction="sum")
    loss, grad = run_kernel(s, p, f, labels, block_size=None, **kwargs)
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, **kwargs), atol, rtol)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_masked_classes(seed, alpha, temperature):
    s, p, f, labels = masked_inputs(37, 9, torch.float32, device=DEVICE)
    kwargs = dict(alpha=alpha, temperature=temperature, reduction="sum")
    loss, grad = run_kernel(s, p, f, labels, block_size=16, **kwargs)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, **kwargs), 1e-6, 1e-4)


def test_fully_masked_leading_block(seed):
    """A whole column block at −inf before any finite class: the running max must not turn into NaN."""
    s, p, f, labels = make_inputs(3, 40, labelled="all", device=DEVICE)
    for x in (s, p, f):
        x[:, :32] = float("-inf")
    labels = labels % 8 + 32
    loss, grad = run_kernel(s, p, f, labels, block_size=16, alpha=0.3, reduction="none")
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, alpha=0.3, reduction="none"), 1e-6, 1e-4)


def test_teacher_masked_only_and_student_masked_only(seed):
    s, p, f, labels = make_inputs(4, 9, device=DEVICE)
    p[:, :4] = float("-inf")  # p = 0 there: adds nothing to KL(pre ‖ m)
    loss, grad = run_kernel(s, p, f, labels, reduction="none")
    assert torch.isfinite(loss).all()
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, reduction="none"), 1e-6, 1e-4)
    s, p = make_inputs(4, 9, device=DEVICE)[:2]
    s[0, 2] = float("-inf")  # documented: KL(fine ‖ m) of row 0 is +inf, the gradient stays finite
    loss, grad = run_kernel(s, p, f, None, reduction="none")
    assert loss[0] == float("inf") and torch.isfinite(loss[1:]).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(grad.double(), hybrid_kd_reference(s, p, f, None, reduction="none")[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_extreme_logits(seed, dtype):
    s, p, f, labels = make_inputs(5, 384, dtype, scale=1.0, device=DEVICE)
    s, p, f = ((x.float().sign() * 1e4).to(dtype) for x in (s, p, f))
    kwargs = dict(alpha=0.3, temperature=0.5, reduction="sum")
    loss, grad = run_kernel(s, p, f, labels, **kwargs)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, **kwargs), 1e-2, 1e-2)


def test_bf16_student_close_to_teachers(seed):
    base = torch.randn(4, 1271) * 2
    s, p, f = ((base + 0.02 * torch.randn_like(base)).bfloat16().to(DEVICE) for _ in range(3))
    loss, grad = run_kernel(s, p, f, None, reduction="sum")
    ref_loss, ref_grad = hybrid_kd_reference(s, p, f, None, reduction="sum")
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-3, atol=1e-6)
    assert float((grad.double() - ref_grad).abs().max()) <= 1e-2 * float(ref_grad.abs().max())


def test_public_function_with_leading_dims(seed):
    s, p, f, labels = make_inputs(0, 11, lead=(3, 5), device=DEVICE)
    grad_output = torch.randn(3, 5)
    loss, grad = run_backend("triton", s, p, f, labels, grad_output, alpha=0.3, reduction="none")
    assert loss.shape == (3, 5) and grad.shape == (3, 5, 11)
    ref_loss, ref_grad = hybrid_kd_reference(s, p, f, labels, alpha=0.3, reduction="none")
    assert_matches(loss, grad, ref_loss, ref_grad, 1e-6, 1e-4, grad_output)


def test_non_contiguous_rows(seed):
    """Row strides are kernel arguments: a column slice of a wider tensor needs no copy."""
    wide = [torch.randn(6, 20, device=DEVICE) * 3 for _ in range(3)]
    s, p, f = (x[:, 3:14] for x in wide)
    labels = torch.randint(0, 11, (6,), device=DEVICE)
    loss, grad = run_kernel(s, p, f, labels, block_size=16, alpha=0.3)
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, alpha=0.3), 1e-6, 1e-4)


def test_without_grad_and_empty(seed):
    s, p, f, labels = make_inputs(5, 9, device=DEVICE)
    loss = hybrid_kd_loss(s, p.clone().requires_grad_(True), f, labels, backend="triton")
    assert loss.grad_fn is None  # the teachers never get a gradient, so neither does a loss of a frozen student
    torch.testing.assert_close(loss.double().cpu(), hybrid_kd_reference(s, p, f, labels)[0])
    empty = torch.randn(0, 9, device=DEVICE, requires_grad=True)
    assert hybrid_kd_loss(empty, empty.detach(), empty.detach(), backend="triton").item() == 0.0


def test_nan_propagates(seed):
    s, p, f, labels = make_inputs(6, 9, device=DEVICE)
    p[2, 4] = float("nan")
    loss, grad = run_kernel(s, p, f, labels, alpha=0.3, reduction="none")
    assert torch.isnan(loss[2]) and torch.isfinite(loss[[0, 1, 3, 4, 5]]).all()
    assert torch.isnan(grad[2]).any() and torch.isfinite(grad[[0, 1, 3, 4, 5]]).all()


def test_repeated_backward_with_retained_graph(seed):
    s, p, f, labels = make_inputs(5, 9, device=DEVICE)
    student = s.clone().requires_grad_(True)
    loss = hybrid_kd_loss(student, p, f, labels, backend="triton")
    loss.backward(retain_graph=True)
    loss.backward()
    expected = 2 * hybrid_kd_reference(s, p, f, labels)[1]
    torch.testing.assert_close(student.grad.double().cpu(), expected, atol=1e-6, rtol=1e-5)


def test_block_size_must_be_a_power_of_two():
    s = torch.randn(2, 9, device=DEVICE)
    with pytest.raises(ValueError, match="block_size must be a power of two"):
        run_kernel(s, s, s, None, block_size=100)


@pytest.mark.parametrize("case", list(bad_calls()))
def test_bad_arguments(case):
    args, kwargs, exc, match = bad_calls()[case]
    kwargs.setdefault("backend", "triton")
    with pytest.raises(exc, match=match):
        hybrid_kd_loss(*args, **kwargs)


# Runs in a fresh interpreter without TRITON_INTERPRET: under the interpreter @triton.jit gives no compilable function.
_AOT_SCRIPT = """
import json, subprocess, sys, tempfile
from pathlib import Path
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import hybridft
from hybridft.kernels import hybrid_kd as mod

dtype, constants, num_warps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
kernel = mod._hybrid_kd_kernel
types = {"labels_ptr": "*i64", "loss_ptr": "*fp32", "scale_ptr": "*fp32", "grad_ptr": "*fp32", "n_cols": "i32",
         "ignore_index": "i32"}
signature = {}
for p in kernel.params:
    if p.is_constexpr:
        signature[p.name] = "constexpr"
    elif p.name in types:
        signature[p.name] = types[p.name]
    else:
        signature[p.name] = f"*{dtype}" if p.name.endswith("_ptr") else "i64" if "stride" in p.name else "fp32"
source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
options = {"num_warps": num_warps, "enable_fp_fusion": True}
compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
with tempfile.TemporaryDirectory() as tmp:
    cubin = Path(tmp) / "kernel.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(cubin)], capture_output=True, text=True,
                           check=True).stdout
line = next(text for text in usage.splitlines() if "REG:" in text)
print(json.dumps(dict(item.split(":", 1) for item in line.split() if ":" in item)))
"""


@pytest.mark.parametrize(
    ("dtype", "blend", "has_ce", "t_is_one"),
    [("bf16", 2, True, False), ("fp32", 0, True, True), ("fp16", 1, False, False)],
)
def test_compiles_for_h100_without_spills(dtype, blend, has_ce, t_is_one):
    """Ahead-of-time compile for sm_90 with the wheel's ptxas (no GPU needed): catches what the interpreter lets
    through (globals, types) and checks, at the launcher's block size for a 128k vocabulary, that nothing spills."""
    import triton

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").is_file():
        pytest.skip("this triton wheel ships no CUDA tools (ptxas, cuobjdump)")
    block, num_warps = hybrid_kd_module._launch_config(128_000, None)
    constants = dict(BLEND=blend, HAS_CE=has_ce, HAS_PRE_KD=True, HAS_FINE_KD=True, T_IS_ONE=t_is_one, NEED_GRAD=True,
                     BLOCK_SIZE=block)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-c", _AOT_SCRIPT, dtype, json.dumps(constants), str(num_warps)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    usage = json.loads(result.stdout.strip().splitlines()[-1])
    assert int(usage["LOCAL"]) == 0 and int(usage["STACK"]) == 0, f"register spills: {usage}"
    assert int(usage["REG"]) <= 96, f"more registers than the launch config was chosen for: {usage}"
