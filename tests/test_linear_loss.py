"""hybrid_kd_linear_loss (every back end) against the independent float64 NumPy reference of tests/_linear_cases.py
(logits, loss and gradients formed in NumPy by hand: no autograd and no library code)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from hybridft import hybrid_kd_linear_loss, hybrid_kd_loss
from hybridft.linear_loss import MIN_CHUNK_ROWS, auto_chunk_rows
from tests._linear_cases import linear_reference, make_heads, make_labels
from tests._loss_cases import LOSS_TOL

BACKENDS = ["torch", "reference", pytest.param("triton", marks=pytest.mark.triton)]
# Matmuls accumulate in float32 for every dtype; gradients are compared relative to their largest entry (atol) and
# elementwise (rtol), and come back in the input dtype: one rounding for half precision.
DTYPE_TOLS = [
    pytest.param(torch.float32, 2e-5, 1e-4, id="fp32"),
    pytest.param(torch.bfloat16, 8e-3, 1.6e-2, id="bf16"),
    pytest.param(torch.float16, 1e-3, 2e-3, id="fp16"),
]
GRAD_NAMES = ("student_hidden", "student_weight", "student_bias")


def run_linear(backend, heads, labels, grad_output=None, **kwargs):
    """(loss, [grad_h, grad_W, grad_b]) of one back end; the student's three tensors are fresh leaves."""
    (h, w, b), (hp, wp, bp), (hf, wf, bf) = heads
    leaves = [x.clone().requires_grad_(True) if x is not None else None for x in (h, w, b)]
    loss = hybrid_kd_linear_loss(
        leaves[0], leaves[1], hp, wp, hf, wf, labels,
        student_bias=leaves[2], pre_bias=bp, fine_bias=bf, backend=backend, **kwargs,
    )  # fmt: skip
    loss.backward(torch.ones_like(loss) if grad_output is None else grad_output)
    return loss.detach(), [None if x is None else x.grad for x in leaves]


def assert_grads_match(grads, ref_grads, atol, rtol, dtype=None):
    for name, got, ref in zip(GRAD_NAMES, grads, ref_grads, strict=True):
        if ref is None:
            assert got is None, name
            continue
        assert got.shape == ref.shape, name
        if dtype is not None:
            assert got.dtype == dtype, name
        scale = float(ref.abs().max())
        torch.testing.assert_close(
            got.double(), ref, atol=atol * scale + 1e-12, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("dtype", "atol", "rtol"), DTYPE_TOLS)
@pytest.mark.parametrize(
    ("rows", "hidden", "vocab", "teacher_hidden"),
    [(37, 64, 1271, (48, 96)), (1, 8, 2, (8, 5))],
    ids=["37x64x1271", "1x8x2"],
)
@pytest.mark.parametrize(("alpha", "temperature", "bias"), [(0.0, 1.0, True), (0.3, 2.0, True), (0.3, 0.5, False),
                                                            (1.0, 2.0, True)])  # fmt: skip
def test_matches_float64_reference(
    seed, backend, dtype, atol, rtol, rows, hidden, vocab, teacher_hidden, alpha, temperature, bias
):
    heads = make_heads(rows, hidden, vocab, dtype, teacher_hidden=teacher_hidden, bias=bias)
    labels = make_labels((rows,), vocab)
    kwargs = dict(alpha=alpha, beta=0.7, gamma=1.3, temperature=temperature, ce_weight=0.9)
    loss, grads = run_linear(backend, heads, labels, chunk_size=8, **kwargs)  # 37 rows: 4 full chunks and 5 rows
    ref_loss, ref_grads = linear_reference(heads, labels, **kwargs)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), ref_loss.double(), **LOSS_TOL)
    assert_grads_match(grads, ref_grads, atol, rtol, dtype)
    if alpha == 1.0:  # the student is not read: its gradients are exact zeros
        assert all(torch.count_nonzero(g) == 0 for g in grads if g is not None)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("labelled", ["mixed", "none", "ignored"])
@pytest.mark.parametrize(("beta", "gamma", "ce_weight"), [(1.0, 1.0, 1.0), (0.0, 2.0, 1.0), (0.5, 0.0, 0.0)])
def test_reductions_labels_and_terms(seed, backend, reduction, labelled, beta, gamma, ce_weight):
    heads = make_heads(23, 16, 130)
    labels = make_labels((23,), 130, labelled)
    kwargs = dict(alpha=0.3, beta=beta, gamma=gamma, temperature=2.0, ce_weight=ce_weight, reduction=reduction)
    grad_output = torch.randn(23) if reduction == "none" else None  # "none" honours a per-row incoming gradient
    loss, grads = run_linear(backend, heads, labels, grad_output, chunk_size=5, **kwargs)
    ref_loss, ref_grads = linear_reference(heads, labels, grad_output, **kwargs)
    assert loss.shape == ((23,) if reduction == "none" else ())
    torch.testing.assert_close(loss.double(), ref_loss.double(), **LOSS_TOL)
    assert_grads_match(grads, ref_grads, 2e-5, 1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equals_hybrid_kd_loss_of_the_logits(seed, backend):
    """The defining identity, against the library's own loss on materialised logits (same back end)."""
    heads = make_heads(29, 32, 300, torch.float64 if backend != "triton" else torch.float32)
    labels = make_labels((29,), 300)
    kwargs = dict(alpha=0.4, beta=0.5, gamma=1.5, temperature=3.0)
    loss, _ = run_linear(backend, heads, labels, chunk_size=4, **kwargs)
    logits = [torch.nn.functional.linear(h, w, b) for h, w, b in heads]
    expected = hybrid_kd_loss(*logits, labels, backend=backend, **kwargs)
    torch.testing.assert_close(loss, expected.detach(), **LOSS_TOL)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
def test_chunk_size_does_not_change_the_result(seed, chunk_size):
    heads = make_heads(64, 16, 257, torch.float64)
    labels = make_labels((64,), 257)
    loss, grads = run_linear("torch", heads, labels, chunk_size=chunk_size, alpha=0.3, temperature=2.0)
    ref_loss, ref_grads = linear_reference(heads, labels, alpha=0.3, temperature=2.0)
    torch.testing.assert_close(loss, ref_loss, atol=1e-12, rtol=1e-12)
    assert_grads_match(grads, ref_grads, 1e-12, 1e-10)


def test_auto_chunk_rows():
    # the SmolLM2 head at 4096 tokens: 2^24 / 49152 = 341 -> 256 rows (50 MB per float32 logits block)
    assert auto_chunk_rows(4096, 49152, 576) == 256
    # large N·H: the chunk's logits may take as many elements as the hidden states (16384·4096 / 128256 -> 512)
    assert auto_chunk_rows(16384, 128256, 4096) == 512
    # a huge vocabulary still gets MIN_CHUNK_ROWS rows, a small one is capped at N
    assert auto_chunk_rows(4096, 1 << 22, 64) == MIN_CHUNK_ROWS
    assert auto_chunk_rows(100, 2, 8) == 100
    assert auto_chunk_rows(0, 49152, 576) == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flat_labels", [False, True])
def test_leading_dims_are_rows(seed, backend, flat_labels):
    heads = make_heads(None, 16, 97, lead=(3, 5))
    labels = make_labels((3, 5), 97)
    given = labels.reshape(-1) if flat_labels else labels
    grad_output = torch.randn(3, 5)
    loss, grads = run_linear(backend, heads, given, grad_output, reduction="none", alpha=0.3, chunk_size=4)
    ref_loss, ref_grads = linear_reference(heads, labels, grad_output, reduction="none", alpha=0.3)
    assert loss.shape == (3, 5) and grads[0].shape == (3, 5, 16)
    torch.testing.assert_close(loss.double(), ref_loss, **LOSS_TOL)
    assert_grads_match(grads, ref_grads, 2e-5, 1e-4)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.triton)])
def test_tied_embedding_weight(seed, backend):
    """The student's head is its input embedding: both uses add into one gradient, as with the reference."""
    dtype = torch.float64 if backend == "torch" else torch.float32
    vocab, hidden, tokens = 211, 24, 19
    ids = torch.randint(0, vocab, (tokens,))
    labels = make_labels((tokens,), vocab)
    proj = torch.randn(hidden, hidden, dtype=dtype) / hidden**0.5
    (_, _, _), (hp, wp, bp), (hf, wf, bf) = make_heads(tokens, hidden, vocab, dtype)
    got = {}
    for name in (backend, "reference"):
        embedding = torch.nn.Embedding(vocab, hidden, dtype=dtype)
        with torch.no_grad():
            embedding.weight.copy_(torch.randn(vocab, hidden, generator=torch.Generator().manual_seed(1)))
        h = torch.tanh(embedding(ids) @ proj)
        loss = hybrid_kd_linear_loss(
            h, embedding.weight, hp, wp, hf, wf, labels, pre_bias=bp, fine_bias=bf, alpha=0.3, backend=name
        )
        loss.backward()
        got[name] = (loss.detach(), embedding.weight.grad)
    torch.testing.assert_close(got[backend][0], got["reference"][0], **LOSS_TOL)
    torch.testing.assert_close(got[backend][1], got["reference"][1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_vocabulary_by_bias(seed, backend):
    """A −inf bias masks a word in every head: the loss is finite and matches, that word gets no gradient."""
    heads = make_heads(17, 16, 64)
    masked = torch.randperm(64)[:10]
    for _, _, b in heads:
        b[masked] = float("-inf")
    labels = make_labels((17,), 64)
    allowed = torch.ones(64, dtype=torch.bool)
    allowed[masked] = False
    labels = torch.where(labels == -100, labels, allowed.nonzero()[labels % int(allowed.sum())].squeeze(1))
    loss, grads = run_linear(backend, heads, labels, alpha=0.3, temperature=2.0, chunk_size=6)
    ref_loss, ref_grads = linear_reference(heads, labels, alpha=0.3, temperature=2.0)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss.double(), ref_loss, **LOSS_TOL)
    assert_grads_match(grads, ref_grads, 2e-5, 1e-4)
    assert torch.count_nonzero(grads[2][masked]) == 0 and torch.count_nonzero(grads[1][masked]) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_the_student_gets_gradients(seed, backend):
    heads = make_heads(9, 8, 33)
    teacher_leaves = [x.clone().requires_grad_(True) for head in heads[1:] for x in head]
    (h, w, b) = (x.clone().requires_grad_(True) for x in heads[0])
    hp, wp, bp, hf, wf, bf = teacher_leaves
    loss = hybrid_kd_linear_loss(h, w, hp, wp, hf, wf, student_bias=b, pre_bias=bp, fine_bias=bf, backend=backend)
    loss.backward()
    assert all(x.grad is None for x in teacher_leaves)
    assert all(x.grad is not None for x in (h, w, b))
    # nothing of the student needs a gradient: neither does the loss, whatever the teachers say
    frozen = hybrid_kd_linear_loss(heads[0][0], heads[0][1], hp, wp, hf, wf, backend=backend)
    assert not frozen.requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_partial_student_gradients(seed, backend):
    """A frozen head (only hidden states train, as with a frozen LM head) or frozen hidden states: the other
    gradients are still right, and no gradient is made for what does not need one."""
    heads = make_heads(13, 8, 50)
    labels = make_labels((13,), 50)
    _, ref_grads = linear_reference(heads, labels, alpha=0.3)
    (h, w, b), (hp, wp, bp), (hf, wf, bf) = heads
    for train in ((True, False, False), (False, True, True)):
        leaves = [x.clone().requires_grad_(need) for x, need in zip((h, w, b), train, strict=True)]
        loss = hybrid_kd_linear_loss(
            leaves[0], leaves[1], hp, wp, hf, wf, labels,
            student_bias=leaves[2], pre_bias=bp, fine_bias=bf, alpha=0.3, backend=backend, chunk_size=4,
        )  # fmt: skip
        loss.backward()
        for leaf, need, ref in zip(leaves, train, ref_grads, strict=True):
            if need:
                torch.testing.assert_close(leaf.grad.double(), ref, atol=2e-5 * float(ref.abs().max()), rtol=1e-4)
            else:
                assert leaf.grad is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_repeated_backward_with_retained_graph(seed, backend, reduction):
    heads = make_heads(11, 8, 40)
    (h, w, _), (hp, wp, _), (hf, wf, _) = heads
    leaf = h.clone().requires_grad_(True)
    loss = hybrid_kd_linear_loss(leaf, w, hp, wp, hf, wf, reduction=reduction, backend=backend).sum()
    loss.backward(retain_graph=True)
    first = leaf.grad.clone()
    (loss * 3).backward()
    torch.testing.assert_close(leaf.grad, first * 4, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    (h, w, _), (hp, wp, _), (hf, wf, _) = make_heads(0, 8, 20)
    leaf = h.requires_grad_(True)
    labels = torch.zeros(0, dtype=torch.int64)
    loss = hybrid_kd_linear_loss(leaf, w, hp, wp, hf, wf, labels, backend=backend)
    loss.backward()
    assert float(loss.detach()) == 0.0 and leaf.grad.shape == (0, 8)


def bad_linear_calls():
    """name -> (positional args, keyword args, exception type, message pattern)."""
    h, w, b = torch.randn(4, 6), torch.randn(5, 6), torch.randn(5)
    y = torch.tensor([0, 1, -100, 4])
    ok = (h, w, h, w, h, w, y)

    def with_arg(index, value):
        args = list(ok)
        args[index] = value
        return tuple(args)

    return {
        "student_hidden int": (with_arg(0, h.long()), {}, TypeError, "student_hidden must be a floating-point"),
        "pre_weight list": (with_arg(3, w.tolist()), {}, TypeError, "pre_weight must be a torch.Tensor"),
        "1-D hidden": (with_arg(0, h[0]), {}, ValueError, r"student_hidden must have shape \(N, H\)"),
        "weight width": (with_arg(5, w[:, :5]), {}, ValueError, r"fine_weight must have shape \(V, H\) with H = "),
        "weight 3-D": (with_arg(1, w[None]), {}, ValueError, r"student_weight must have shape \(V, H\)"),
        "vocab": (with_arg(3, w[:4]), {}, ValueError, "pre_weight must have student_weight's vocabulary size V = 5"),
        "rows": (with_arg(4, h[:3]), {}, ValueError, "fine_hidden must have the leading shape of student_hidden"),
        "dtype": (with_arg(2, h.double()), {}, TypeError, r"pre_hidden must have the dtype of student_hidden"),
        "device": (with_arg(5, w.to("meta")), {}, ValueError, "fine_weight must be on the device of student_hidden"),
        "bias shape": (ok, {"student_bias": b[:4]}, ValueError, r"student_bias must have shape \(5,\) or be None"),
        "bias dtype": (ok, {"pre_bias": b.half()}, TypeError, "pre_bias must have the dtype of student_hidden"),
        "labels shape": (with_arg(6, y[:3]), {}, ValueError, r"\(4,\) \(the leading shape of student_hidden\)"),
        "label high": (with_arg(6, torch.tensor([0, 5, 1, 1])), {}, ValueError, r"labels must be in \[0, 5\).*got 5"),
        "labels dtype": (with_arg(6, y.int()), {}, TypeError, "labels must be an int64 tensor"),
        "alpha": (ok, {"alpha": 2.0}, ValueError, r"alpha must be in \[0, 1\]"),
        "temperature": (ok, {"temperature": 0}, ValueError, "temperature must be > 0"),
        "reduction": (ok, {"reduction": "avg"}, ValueError, "reduction must be one of"),
        "backend": (ok, {"backend": "cuda"}, ValueError, "backend must be one of"),
        "chunk zero": (ok, {"chunk_size": 0}, ValueError, "chunk_size must be a positive int or None, got 0"),
        "chunk float": (ok, {"chunk_size": 8.0}, ValueError, "chunk_size must be a positive int or None"),
    }


@pytest.mark.parametrize("case", list(bad_linear_calls()))
def test_bad_arguments(case):
    args, kwargs, exc, match = bad_linear_calls()[case]
    with pytest.raises(exc, match=match):
        hybrid_kd_linear_loss(*args, **kwargs)


def test_import_needs_only_torch():
    code = (
        "import sys; from hybridft import hybrid_kd_linear_loss; "
        "heavy = [m for m in ('transformers', 'datasets', 'evaluate', 'peft', 'triton') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _blockwise_reference(heads, labels, block, **kwargs):
    """The float64 reference for reduction "sum", block of rows by block (rows are independent under "sum"), so the
    (N, V) float64 arrays of a 4096 × 49152 head never exist at once."""
    h = heads[0][0]
    total, grad_h, grad_w, grad_b = 0.0, [], 0.0, 0.0
    for start in range(0, h.shape[0], block):
        rows = slice(start, start + block)
        part = [(x[rows], wx, bx) for x, wx, bx in heads]
        loss, (gh, gw, gb) = linear_reference(part, labels[rows], reduction="sum", **kwargs)
        total, grad_w, grad_b = total + float(loss), grad_w + gw, grad_b + gb
        grad_h.append(gh)
    return total, [torch.cat(grad_h), grad_w, grad_b]


@pytest.mark.slow
def test_smollm2_head_on_the_fallback(seed):
    """SmolLM2's head (576 → 49,152 words) at 1,000 tokens, fp32 fused fallback vs the float64 reference. The
    automatic chunk is 256 rows here, so the rows run as three full chunks and a partial one."""
    rows, hidden, vocab = 1000, 576, 49152
    heads = make_heads(rows, hidden, vocab, scale=4.0)
    labels = make_labels((rows,), vocab)
    kwargs = dict(alpha=0.3, beta=1.0, gamma=1.0, temperature=2.0)
    assert auto_chunk_rows(rows, vocab, hidden) == 256
    loss, grads = run_linear("torch", heads, labels, reduction="sum", **kwargs)
    ref_loss, ref_grads = _blockwise_reference(heads, labels, 512, **kwargs)
    assert np.isclose(float(loss), ref_loss, rtol=2e-6)
    assert_grads_match(grads, ref_grads, 2e-5, 1e-3)


def test_real_causal_lm_head_with_tied_embeddings(seed):
    """A Llama model with tied embeddings: the loss from its final hidden states and lm_head weight equals
    hybrid_kd_loss of its own logits, and the tied weight's gradient (embedding + head) matches the reference."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=503, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, tie_word_embeddings=True, max_position_embeddings=64,
    )  # fmt: skip
    ids = torch.randint(0, 503, (2, 9))
    labels = torch.where(torch.rand(2, 9) < 0.3, -100, torch.randint(0, 503, (2, 9)))
    teachers = [transformers.LlamaForCausalLM(config).eval() for _ in range(2)]
    with torch.no_grad():
        (pre_h, pre_logits), (fine_h, fine_logits) = (
            (out.hidden_states[-1], out.logits) for out in (t(ids, output_hidden_states=True) for t in teachers)
        )
    results = {}
    for backend in ("torch", "reference"):
        student = transformers.LlamaForCausalLM(config)
        student.load_state_dict(teachers[1].state_dict())  # start from the fine teacher: student ≈ teacher
        assert student.lm_head.weight is student.model.embed_tokens.weight
        hidden = student.model(ids).last_hidden_state
        loss = hybrid_kd_linear_loss(
            hidden, student.lm_head.weight, pre_h, teachers[0].lm_head.weight, fine_h, teachers[1].lm_head.weight,
            labels, alpha=0.5, temperature=2.0, backend=backend,
        )  # fmt: skip
        loss.backward()
        results[backend] = (loss.detach(), student.lm_head.weight.grad.clone())
        with torch.no_grad():
            logits = student(ids).logits
        expected = hybrid_kd_loss(logits, pre_logits, fine_logits, labels, alpha=0.5, temperature=2.0)
        torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results["torch"][1], results["reference"][1], atol=1e-6, rtol=1e-4)
