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
from hybridft.loss_checks import check_scalars
from tests._loss_cases import DTYPE_TOLS, assert_matches, bad_calls, make_inputs, masked_inputs, run_backend
from tests._loss_reference import hybrid_kd_reference

hybrid_kd_module = pytest.importorskip("hybridft.kernels.hybrid_kd", reason="triton is not installed")

pytestmark = pytest.mark.triton
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BLOCK = 256  # 1271 columns → 5 blocks, the last one partial


def kernel_params(**kwargs):
    """LossParams from hybrid_kd_loss's scalars (defaults: α = 0, β = γ = 1, T = 1, ce_weight = 1, "mean")."""
    args = {"alpha": 0.0, "beta": 1.0, "gamma": 1.0, "temperature": 1.0, "ce_weight": 1.0, "ignore_index": -100}
    args.update(kwargs)
    reduction = args.pop("reduction", "mean")
    return check_scalars(*args.values(), reduction, "triton")


def run_kernel(s, p, f, labels, grad_output=None, block_size=BLOCK, **kwargs):
    """Call the kernel's functional entry with a forced block size; kwargs are hybrid_kd_loss's scalars."""
    params = kernel_params(**kwargs)
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


# ------------------------------------------------------------------------------ tile shapes and code paths


def launch_config_of(rows, classes, dtype=torch.float32, block_size=None, strides=None):
    """The LaunchConfig and VEC that hybrid_kd_forward picks for contiguous (or given-stride) inputs."""
    strides = strides or (classes,) * 4
    vec = hybrid_kd_module._vector_width(classes, strides)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return hybrid_kd_module._launch_config(rows, classes, block_size, vec, itemsize), vec


def test_launch_configs():
    """Small rows share a program (no idle lanes at C = 2, 3, 9), a row of 32 lanes or more gets a warp of its own,
    and rows above MAX_BLOCK_SIZE stream through blocks of 2048 columns, 16 bytes per thread (8 bf16, 4 fp32)."""
    config = hybrid_kd_module.LaunchConfig
    assert launch_config_of(16384, 2, torch.bfloat16) == (config(2, 64, 2, True), 2)
    assert launch_config_of(1 << 20, 2, torch.bfloat16) == (config(2, 256, 8, True), 2)
    assert launch_config_of(1 << 20, 3, torch.bfloat16) == (config(4, 64, 8, True), 1)
    assert launch_config_of(1 << 20, 9, torch.float32) == (config(16, 16, 8, True), 1)
    assert launch_config_of(1 << 20, 32, torch.bfloat16) == (config(32, 64, 8, True), 16)
    assert launch_config_of(16384, 201, torch.bfloat16) == (config(256, 1, 1, True), 1)
    assert launch_config_of(16384, 1271, torch.bfloat16) == (config(2048, 1, 8, True), 1)
    assert launch_config_of(16384, 128_000, torch.bfloat16) == (config(2048, 1, 8, False), 16)
    assert launch_config_of(16384, 128_000, torch.float32) == (config(2048, 1, 16, False), 16)
    assert launch_config_of(3, 9)[0].rows == 2  # few rows: fewer warps and rows per program, more programs
    assert launch_config_of(4, 40, strides=(40, 20, 60, 0))[1] == 4  # VEC divides C and every row stride


@pytest.fixture
def many_rows_per_program(monkeypatch):
    """Up to 8 warps of rows per program even for the tests' small N (normally kept for N ≥ 256 programs' worth)."""
    monkeypatch.setattr(hybrid_kd_module, "MIN_PROGRAMS", 1)


@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPE_TOLS)
@pytest.mark.parametrize(("rows", "classes"), [(301, 2), (70, 3), (37, 9), (70, 16), (37, 32), (5, 100)])
@pytest.mark.parametrize(("alpha", "temperature"), [(0.0, 1.0), (0.3, 2.0), (1.0, 0.5)])
def test_multi_row_programs(seed, many_rows_per_program, dtype, atol, rtol, rows, classes, alpha, temperature):
    """Several rows per program, the last program partly past N; vectorised (C = 2, 16, 32) and scalar (3, 9, 100)."""
    s, p, f, labels = make_inputs(rows, classes, dtype, device=DEVICE)
    config = launch_config_of(rows, classes, dtype)[0]
    assert config.one_block and ((config.rows > 1 and rows % config.rows) or classes == 100)
    kwargs = dict(alpha=alpha, beta=0.7, gamma=1.3, temperature=temperature, ce_weight=0.9, reduction="sum")
    loss, grad = run_kernel(s, p, f, labels, block_size=None, **kwargs)
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, **kwargs), atol, rtol)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_multi_row_masked_and_ignored(seed, many_rows_per_program, temperature):
    s, p, f, labels = masked_inputs(70, 9, torch.float32, device=DEVICE)
    labels[::3] = -100
    kwargs = dict(alpha=0.3, temperature=temperature, reduction="none")
    loss, grad = run_kernel(s, p, f, labels, block_size=None, **kwargs)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, **kwargs), 1e-6, 1e-4)


@pytest.mark.parametrize(("classes", "block", "vec"), [(32, 16, 16), (48, 16, 16), (24, 16, 8), (40, 16, 4)])
def test_vectorised_streaming_and_strides(seed, classes, block, vec):
    """VEC > 1 restates C and the row strides as multiples of VEC inside the kernel: exact only where VEC divides
    them, which strided rows (a slice of a wider tensor) test; the row streams through several blocks."""
    width = classes + vec * 3
    wide = [torch.randn(6, width, device=DEVICE) * 3 for _ in range(3)]
    s, p, f = (x[:, vec : vec + classes] for x in wide)
    assert hybrid_kd_module._vector_width(classes, (width, width, width, classes)) == vec
    labels = torch.randint(0, classes, (6,), device=DEVICE)
    loss, grad = run_kernel(s, p, f, labels, block_size=block, alpha=0.3, temperature=2.0)
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, alpha=0.3, temperature=2.0), 1e-6, 1e-4)


def test_streaming_with_several_rows_per_program(seed, monkeypatch):
    """The column loop over a (4, 16) tile: the launcher keeps one row per streamed program, the kernel allows more."""
    monkeypatch.setattr(
        hybrid_kd_module, "_launch_config", lambda *args: hybrid_kd_module.LaunchConfig(16, 4, 1, False)
    )
    s, p, f, labels = masked_inputs(10, 40, torch.float32, device=DEVICE)
    kwargs = dict(alpha=0.3, temperature=2.0, reduction="none")
    loss, grad = run_kernel(s, p, f, labels, block_size=16, **kwargs)
    assert_matches(loss, grad, *hybrid_kd_reference(s, p, f, labels, **kwargs), 1e-6, 1e-4)


@pytest.mark.parametrize(("rows", "classes", "block_size"), [(37, 9, None), (3, 384, None), (4, 1271, BLOCK)])
def test_gradient_in_place_over_the_student(seed, many_rows_per_program, rows, classes, block_size):
    """grad=student: the kernel overwrites the float32 student logits with the gradient (hybridft.linear_loss does)."""
    s, p, f, labels = make_inputs(rows, classes, device=DEVICE)
    params = kernel_params(alpha=0.3, temperature=2.0)
    loss_out, grad_out = hybrid_kd_module.hybrid_kd_forward(
        s, p, f, labels, params, need_grad=True, block_size=block_size
    )
    buffer = s.clone()
    loss_in, grad_in = hybrid_kd_module.hybrid_kd_forward(
        buffer, p, f, labels, params, need_grad=True, block_size=block_size, grad=buffer
    )
    assert grad_in.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(loss_in, loss_out, rtol=0, atol=0)
    torch.testing.assert_close(grad_in, grad_out, rtol=0, atol=0)
    ref_loss, ref_grad = hybrid_kd_reference(s, p, f, labels, alpha=0.3, temperature=2.0)
    assert_matches(loss_in.sum().cpu(), grad_in.cpu(), ref_loss, ref_grad, 1e-6, 1e-4)


@pytest.mark.parametrize("labelled", ["mixed", "all", "none", "ignored"])
def test_term_scales_kernel(seed, labelled):
    """The one-launch "mean" scales (used on CUDA) against the torch formula, strided labels included."""
    _, _, _, labels = make_inputs(1500, 3, labelled=labelled, device=DEVICE)
    if labels is not None:
        labels = torch.stack([labels, labels], dim=1)[:, 1]  # stride 2
    labelled = 0 if labels is None else int((labels != -100).sum())
    expected = torch.tensor([1 / labelled if labelled else 0.0, 1 / 1500])
    scales = torch.empty(2, device=DEVICE)
    hybrid_kd_module._launch_term_scales(labels, 1500, -100, scales)
    torch.testing.assert_close(scales.cpu(), expected, rtol=1e-6, atol=0)
    params = kernel_params(reduction="mean")
    torch.testing.assert_close(hybrid_kd_module.term_scales_tensor(labels, 1500, params, DEVICE).cpu(), expected)


# ------------------------------------------------------------------ ahead-of-time sm_90 compile: registers and PTX

# Runs in a fresh interpreter without TRITON_INTERPRET: under the interpreter @triton.jit gives no compilable function.
# Pointers are marked 16-byte aligned, as the JIT marks torch's allocations; integers carry no divisibility, so any
# vectorisation comes from the kernel's own VEC. Prints one JSON line per config: resource usage and PTX counts.
_AOT_SCRIPT = """
import json, re, subprocess, sys, tempfile
from pathlib import Path
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import hybridft
from hybridft.kernels import hybrid_kd as mod

kernel = mod._hybrid_kd_kernel
types = {"labels_ptr": "*i64", "loss_ptr": "*fp32", "scale_ptr": "*fp32", "grad_ptr": "*fp32", "n_rows": "i32",
         "n_cols": "i32", "ignore_index": "i32"}
cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
PATTERNS = {"ld_v4": r"ld\\.global[\\w.]*\\.v4\\.", "ld_v2": r"ld\\.global[\\w.]*\\.v2\\.",
            "ld_scalar": r"ld\\.global(?![\\w.]*\\.v[248]\\.)[\\w.]*\\s",
            "st_v4": r"st\\.global[\\w.]*\\.v4\\.", "st_scalar": r"st\\.global(?![\\w.]*\\.v[248]\\.)[\\w.]*\\s",
            "bar_sync": r"\\b(?:bar|barrier)\\.sync"}


def loop_lines(lines):
    # indices of lines inside a loop: from a label to a later branch back to it
    labels, inside = {}, set()
    for i, line in enumerate(lines):
        label = re.match(r"\\s*(\\$L\\w+):", line)
        if label:
            labels[label.group(1)] = i
        target = re.search(r"\\bbra(?:\\.uni)?\\s+(\\$L\\w+);", line)
        if target and target.group(1) in labels:
            inside.update(range(labels[target.group(1)], i + 1))
    return inside


for dtype, constants, num_warps in json.loads(sys.argv[1]):
    signature, attrs = {}, {}
    for i, p in enumerate(kernel.params):
        if p.is_constexpr:
            signature[p.name] = "constexpr"
            continue
        default = f"*{dtype}" if p.name.endswith("_ptr") else "i64" if "stride" in p.name else "fp32"
        signature[p.name] = types.get(p.name, default)
        if signature[p.name].startswith("*"):
            attrs[(i,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps,
                                                                                  "enable_fp_fusion": True})
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(cubin)], capture_output=True,
                               text=True, check=True).stdout
    line = next(text for text in usage.splitlines() if "REG:" in text)
    result = {k: int(v) for k, v in (item.split(":", 1) for item in line.split() if ":" in item) if v.isdigit()}
    lines = compiled.asm["ptx"].splitlines()
    in_loop = loop_lines(lines)
    for name, pattern in PATTERNS.items():
        hits = [i for i, text in enumerate(lines) if re.search(pattern, text)]
        result[name] = len(hits)
        result[name + "_in_loop"] = sum(i in in_loop for i in hits)
    print(json.dumps(result))
"""

_FULL = dict(HAS_PRE_KD=True, HAS_FINE_KD=True, NEED_GRAD=True, SCALED=True)
# name -> (dtype, constexprs, num_warps); the launcher's own configs for a 128k vocabulary, C = 1271, C = 2, 9, 32, 201
_SM90_CONFIGS = {
    "stream bf16 vec16": ("bf16", dict(BLEND=2, HAS_CE=True, T_IS_ONE=False, VEC=16, ROWS=1, BLOCK_SIZE=2048,
                                       ONE_BLOCK=False), 8),
    "stream fp32 vec16": ("fp32", dict(BLEND=0, HAS_CE=True, T_IS_ONE=True, VEC=16, ROWS=1, BLOCK_SIZE=2048,
                                       ONE_BLOCK=False), 16),
    "stream bf16 vec1": ("bf16", dict(BLEND=2, HAS_CE=True, T_IS_ONE=False, VEC=1, ROWS=1, BLOCK_SIZE=2048,
                                      ONE_BLOCK=False), 8),
    "stream fp16 vec8 pre-only": ("fp16", dict(BLEND=1, HAS_CE=False, T_IS_ONE=False, VEC=8, ROWS=1,
                                               BLOCK_SIZE=2048, ONE_BLOCK=False), 8),
    "row 1271 bf16": ("bf16", dict(BLEND=2, HAS_CE=True, T_IS_ONE=False, VEC=1, ROWS=1, BLOCK_SIZE=2048,
                                   ONE_BLOCK=True), 8),
    "rows C=2 bf16": ("bf16", dict(BLEND=2, HAS_CE=True, T_IS_ONE=False, VEC=2, ROWS=256, BLOCK_SIZE=2, ONE_BLOCK=True),
                      8),
    "rows C=9 fp32": ("fp32", dict(BLEND=2, HAS_CE=True, T_IS_ONE=False, VEC=1, ROWS=16, BLOCK_SIZE=16,
                                   ONE_BLOCK=True), 8),
    "rows C=32 bf16": ("bf16", dict(BLEND=2, HAS_CE=True, T_IS_ONE=False, VEC=16, ROWS=64, BLOCK_SIZE=32,
                                    ONE_BLOCK=True), 8),
    "warp row C=201 bf16": ("bf16", dict(BLEND=2, HAS_CE=True, T_IS_ONE=False, VEC=1, ROWS=1, BLOCK_SIZE=256,
                                         ONE_BLOCK=True), 1),
}  # fmt: skip


@pytest.fixture(scope="module")
def sm90():
    """Ahead-of-time compile of every config in _SM90_CONFIGS for sm_90 with the wheel's ptxas (no GPU needed):
    name -> resource usage (REG, LOCAL, STACK, ...) and PTX counts (total and inside loops)."""
    import triton

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").is_file():
        pytest.skip("this triton wheel ships no CUDA tools (ptxas, cuobjdump)")
    configs = [(dtype, {**_FULL, **constants}, warps) for dtype, constants, warps in _SM90_CONFIGS.values()]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-c", _AOT_SCRIPT, json.dumps(configs)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.strip().splitlines()[-len(configs) :]]
    return dict(zip(_SM90_CONFIGS, rows, strict=True))


@pytest.mark.parametrize("name", list(_SM90_CONFIGS))
def test_compiles_for_h100_without_spills(sm90, name):
    """Catches what the interpreter lets through (globals, types) and checks that nothing spills. The streamed
    configs keep 9 per-lane statistics of 16 bytes of columns per thread (8 for bf16: up to 157 registers)."""
    usage = sm90[name]
    assert usage["LOCAL"] == 0 and usage["STACK"] == 0, f"register spills: {usage}"
    limit = 168 if name.startswith("stream") else 112
    assert usage["REG"] <= limit, f"more registers than the launch config was chosen for: {usage}"


@pytest.mark.parametrize(
    ("name", "v4_loads", "v4_stores"),
    [("stream bf16 vec16", 6, 2), ("stream fp32 vec16", 6, 1), ("stream fp16 vec8 pre-only", 4, 2),
     ("rows C=32 bf16", 3, 2)],
)  # fmt: skip
def test_ptx_loads_and_stores_are_128_bit(sm90, name, v4_loads, v4_stores):
    """Where VEC allows (C and the row strides multiples of 16 elements), every logit load and gradient store is a
    128-bit vector access; the scalar loads left are the labels' (label, m_y) and the two term scales. Before VEC
    (the same bf16 stream config without integer divisibility): 0 vector and 53 scalar ld.global, 9 scalar st."""
    counts = sm90[name]
    assert counts["ld_v4"] >= v4_loads and counts["st_v4"] >= v4_stores, counts
    assert counts["ld_scalar"] <= 5 and counts["st_scalar"] <= 1, counts


def test_ptx_fallback_is_scalar(sm90):
    """The counters themselves: the same stream config at VEC = 1 (e.g. C = 1271) is all scalar accesses."""
    counts = sm90["stream bf16 vec1"]
    assert counts["ld_v4"] == counts["ld_v2"] == 0 and counts["ld_scalar"] >= 48 and counts["st_scalar"] >= 8, counts


@pytest.mark.parametrize("name", [name for name in _SM90_CONFIGS if name.startswith("stream")])
def test_ptx_no_reduction_barrier_in_the_column_loop(sm90, name):
    """Per-lane running statistics: the cross-warp reductions (about 20 bar.sync) run once, after pass 1's loop;
    before, all of them ran in the loop, for every 2048-column block. Half-precision logits keep 2 bar.sync in the
    gradient loop: the float32 store takes 4 columns per thread where the 16-bit loads take 8, a shared-memory
    layout change the compiler inserts (it was there before too)."""
    counts = sm90[name]
    loop_limit = 0 if name.startswith("stream fp32") else 2
    assert counts["bar_sync_in_loop"] <= loop_limit and counts["bar_sync"] <= 24, counts
    assert counts["ld_v4_in_loop"] + counts["ld_scalar_in_loop"] > 0, "the loop finder found no loop"


@pytest.mark.parametrize(
    ("name", "barriers"),
    [("rows C=2 bf16", 2), ("rows C=9 fp32", 2), ("rows C=32 bf16", 4), ("warp row C=201 bf16", 0)],
)
def test_ptx_small_rows_reduce_inside_warps(sm90, name, barriers):
    """Multi-row tiles keep each row inside one warp: the row reductions are shuffles; the few bar.sync left are
    layout changes of the per-row label values, once per program."""
    counts = sm90[name]
    assert counts["bar_sync"] <= barriers and counts["bar_sync_in_loop"] == 0, counts
