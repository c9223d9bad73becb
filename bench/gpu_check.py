"""One prepared device check: ``python -m bench.gpu_check --out DIR`` (from the repository root, ``PYTHONPATH=.``).

It imports torch, numpy, triton and transformers only (and this repository), so a bare GPU machine with those runs it
without installing the project. Each part appends its rows to ``DIR/gpu_check.csv`` and rewrites
``DIR/gpu_check.md`` as soon as it ends, correctness first, so a run cut off by a time limit still leaves results:

1. **correctness**: both losses (`hybrid_kd_loss`, `hybrid_kd_linear_loss`), forward and backward, on the Triton
   back end and the torch fallback against the float64 reference, in float32, bfloat16 and float16, with strided
   inputs, classes masked with −inf and ignored labels; and the kernel's own self-check (`triton_selfcheck`).
2. **logits loss**: N = 16,384 rows, V ∈ {2, 32,000, 128,256}, bfloat16 and float32: the fused kernel against eager
   PyTorch (the reference composition) and `torch.compile` of it, forward + backward. The achieved bandwidth counts
   3 logit reads and 1 gradient write per row, as a fraction of a device-to-device copy timed in the same run and
   of the GPU's nominal peak. A baseline that runs out of memory is recorded as OOM, and the check goes on.
3. **fused linear loss**: at SmolLM2's head (576 × 49,152) and Llama-3's (4,096 × 128,256): time and peak memory of
   `hybrid_kd_linear_loss` against the logits materialised and passed to `hybrid_kd_loss`.
4. **student step**: one optimiser step of a randomly initialised model built from SmolLM2's config (no weights
   needed), plain cross-entropy against the hybrid loss on its last hidden states.

``--dry-run`` runs the same code on the CPU, the kernel under the Triton interpreter, at tiny shapes (CI runs it).
Without a CUDA device and without ``--dry-run`` it exits with status 2; without triton it says so and runs the
torch parts.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hybridft.linear_loss import hybrid_kd_linear_loss
from hybridft.loss import hybrid_kd_loss, reference_loss, triton_selfcheck
from hybridft.loss_checks import check_scalars
from hybridft.provenance import collect

CSV_NAME, MD_NAME = "gpu_check.csv", "gpu_check.md"
FIELDS = ("part", "case", "dtype", "backend", "metric", "value", "unit", "ok", "note")
# Nominal HBM bandwidth (TB/s) of the cards the device tool lends, by a substring of the CUDA device name.
PEAK_TBPS = {"H200": 4.8, "H100 NVL": 3.9, "H100 PCIe": 2.0, "H100": 3.35, "A100-SXM4-80GB": 2.04, "A100": 1.56}
TOLERANCE = {torch.float32: 2e-4, torch.bfloat16: 3e-2, torch.float16: 4e-3}  # loss and gradient, vs float64
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LOSS_ARGS = {"alpha": 0.3, "beta": 1.0, "gamma": 0.5, "temperature": 2.0, "ce_weight": 1.0}
# SmolLM2-135M's config (huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct), written out so that no download runs.
SMOLLM2 = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192, "rope_theta": 100000.0,
           "rms_norm_eps": 1e-5, "tie_word_embeddings": True}  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """The shapes of one run: the GPU check's, or the dry run's tiny ones."""

    correctness: tuple[tuple[int, int], ...]
    logits_rows: int
    vocabularies: tuple[int, ...]
    heads: tuple[tuple[str, int, int, int], ...]  # (name, rows, hidden, vocab)
    student: dict
    batch: tuple[int, int]  # sequences × tokens of a student step
    repeats: int


GPU = Sizes(correctness=((64, 2), (33, 1000), (16, 32000)), logits_rows=16384, vocabularies=(2, 32000, 128256),
            heads=(("smollm2", 8192, 576, 49152), ("llama3", 8192, 4096, 128256)), student=SMOLLM2, batch=(8, 512),
            repeats=10)  # fmt: skip
DRY = Sizes(correctness=((8, 2), (5, 37)), logits_rows=64, vocabularies=(2, 300), heads=(("tiny", 32, 16, 300),),
            student={**SMOLLM2, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2},
            batch=(2, 16), repeats=2)  # fmt: skip


class Results:
    """The check's rows, appended to the CSV as each part ends and summarised in the markdown."""

    def __init__(self, out: Path, header: dict[str, object]):
        self.out, self.header, self.rows = out, header, []
        out.mkdir(parents=True, exist_ok=True)
        with (out / CSV_NAME).open("w", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writeheader()

    def add(self, part: str, case: str, dtype: str, backend: str, metric: str, value, unit: str = "",
            ok: bool | None = None, note: str = "") -> None:  # fmt: skip
        self.rows.append({"part": part, "case": case, "dtype": dtype, "backend": backend, "metric": metric,
                          "value": value, "unit": unit, "ok": "" if ok is None else ok, "note": note})  # fmt: skip

    def flush(self, written: int) -> int:
        """Append the rows since ``written`` to the CSV and rewrite the markdown; returns the new count."""
        with (self.out / CSV_NAME).open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writerows(self.rows[written:])
        lines = ["# Device check (`python -m bench.gpu_check`)", ""]
        lines += [f"- {key}: {value}" for key, value in self.header.items()]
        lines += [
            "",
            "| Part | Case | dtype | Back end | Metric | Value | Unit | OK | Note |",
            "|---|---|---|---|---|---:|---|---|---|",
        ]
        for r in self.rows:
            value = f"{r['value']:.4g}" if isinstance(r["value"], float) else r["value"]
            lines.append(f"| {r['part']} | {r['case']} | {r['dtype']} | {r['backend']} | {r['metric']} | {value} | "
                         f"{r['unit']} | {r['ok']} | {r['note']} |")  # fmt: skip
        (self.out / MD_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return len(self.rows)


def header(device: str, dry_run: bool, triton_version: str | None) -> dict[str, object]:
    info = collect()
    head = {"mode": "dry run (CPU, Triton interpreter, tiny shapes)" if dry_run else "GPU",
            "device": torch.cuda.get_device_name() if device == "cuda" else info["hardware"].get("cpu"),
            "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton_version or "missing",
            "python": info["python"], "git revision": info.get("git_revision"), "git dirty": info.get("git_dirty"),
            "timestamp": info.get("timestamp")}  # fmt: skip
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        head["memory_gib"] = round(props.total_memory / 2**30, 1)
        head["driver"] = _driver_version()
    try:
        import transformers  # noqa: PLC0415  the student part's only use of it; optional for the rest

        head["transformers"] = transformers.__version__
    except ImportError:
        head["transformers"] = "missing"
    return head


def _driver_version() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls after one warm-up."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def peak_mb(fn: Callable[[], object], device: str) -> float | None:
    """Peak memory of ``fn()`` above what was allocated before it, in MB (CUDA only)."""
    if device != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated() - before) / 1e6


def inputs(rows: int, classes: int, dtype: torch.dtype, device: str, *, strided: bool, masked: bool, seed: int = 0):
    """Student, teachers and labels (a quarter ignored): with ``strided`` each logits tensor is a view of every other
    column of a buffer twice as wide; with ``masked`` the last class is −inf in every input (no label points at it)."""
    g = torch.Generator().manual_seed(seed)
    logits = [3 * torch.randn(rows, classes, generator=g) for _ in range(3)]
    if masked and classes > 2:
        for x in logits:
            x[:, classes - 1] = -math.inf
    labels = torch.randint(0, classes - 1 if masked and classes > 2 else classes, (rows,), generator=g)
    labels[torch.rand(rows, generator=g) < 0.25] = -100
    out = []
    for x in logits:
        x = x.to(device=device, dtype=dtype)
        if strided:
            wide = torch.zeros(rows, 2 * classes, dtype=dtype, device=device)
            wide[:, ::2] = x
            x = wide[:, ::2]
        out.append(x)
    return (*out, labels.to(device))


def grad_of(backend: str, s, p, f, labels, **kwargs):
    """(loss, d loss / d student) in float64. A strided ``s`` stays strided: the student is the same view of a
    leaf buffer, so the back end reads and writes through its strides."""
    if s.is_contiguous():
        leaf = s.detach().clone().requires_grad_(True)
        student, pick = leaf, (lambda grad: grad)
    else:
        leaf = torch.zeros(s.shape[0], 2 * s.shape[1], dtype=s.dtype, device=s.device)
        leaf[:, ::2] = s.detach()
        leaf.requires_grad_(True)
        student, pick = leaf[:, ::2], (lambda grad: grad[:, ::2])
    loss = hybrid_kd_loss(student, p, f, labels, backend=backend, **LOSS_ARGS, **kwargs)
    loss.backward()
    return loss.detach().double(), pick(leaf.grad).double()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    finite = torch.isfinite(b)
    if not torch.equal(torch.isfinite(a), finite):
        return math.inf
    scale = max(1.0, float(b[finite].abs().max())) if finite.any() else 1.0
    return float((a[finite] - b[finite]).abs().max()) / scale if finite.any() else 0.0


def check_logits(results: Results, sizes: Sizes, device: str, backends: list[str]) -> None:
    """Forward and backward of `hybrid_kd_loss` against the float64 reference."""
    for name, dtype in DTYPES.items():
        for rows, classes in sizes.correctness:
            for strided, masked in ((False, False), (True, True)):
                s, p, f, labels = inputs(rows, classes, dtype, device, strided=strided, masked=masked)
                ref_loss, ref_grad = grad_of("reference", *(x.double() for x in (s, p, f)), labels)
                case = f"{rows}x{classes}" + (" strided" if strided else "") + (" -inf" if masked else "")
                for backend in backends:
                    loss, grad = grad_of(backend, s, p, f, labels)
                    err = max(relative_error(loss, ref_loss), relative_error(grad, ref_grad))
                    results.add("correctness", f"hybrid_kd_loss {case}", name, backend, "max relative error", err,
                                ok=err <= TOLERANCE[dtype], note="forward + backward vs float64")  # fmt: skip
        if "triton" in backends:
            agrees, detail = triton_selfcheck(torch.device(device), dtype)
            results.add("correctness", "triton_selfcheck", name, "triton", "agrees", agrees, ok=agrees, note=detail)


def check_linear(results: Results, sizes: Sizes, device: str, backends: list[str]) -> None:
    """Forward and backward of `hybrid_kd_linear_loss` against its logits in float64 through the reference."""
    rows, hidden, vocab = 24, 16, sizes.correctness[-1][1]
    g = torch.Generator().manual_seed(1)
    base = [torch.randn(rows, hidden, generator=g) for _ in range(3)] + [torch.randn(vocab, hidden, generator=g) / 4
                                                                        for _ in range(3)]  # fmt: skip
    labels = torch.randint(0, vocab, (rows,), generator=g)
    labels[::5] = -100
    labels = labels.to(device)
    for name, dtype in DTYPES.items():
        hs, hp, hf, ws, wp, wf = (x.to(device=device, dtype=dtype) for x in base)
        ws64 = ws.double().requires_grad_(True)
        hs64 = hs.double().requires_grad_(True)
        ref = reference_loss(hs64 @ ws64.T, hp.double() @ wp.double().T, hf.double() @ wf.double().T, labels,
                             check_scalars(**LOSS_ARGS, ignore_index=-100, reduction="mean", backend="reference"))  # fmt: skip
        ref.backward()
        for backend in backends:
            h, w = hs.detach().clone().requires_grad_(True), ws.detach().clone().requires_grad_(True)
            loss = hybrid_kd_linear_loss(h, w, hp, wp, hf, wf, labels, backend=backend, **LOSS_ARGS)
            loss.backward()
            err = max(relative_error(loss.detach().double(), ref.detach()), relative_error(h.grad.double(), hs64.grad),
                      relative_error(w.grad.double(), ws64.grad))  # fmt: skip
            results.add("correctness", f"hybrid_kd_linear_loss {rows}x{hidden}x{vocab}", name, backend,
                        "max relative error", err, ok=err <= 2 * TOLERANCE[dtype],
                        note="forward + backward (hidden and weight) vs float64")  # fmt: skip


def oom_error() -> tuple[type[BaseException], ...]:
    return (torch.cuda.OutOfMemoryError,) if hasattr(torch.cuda, "OutOfMemoryError") else (RuntimeError,)


def measured(results: Results, part: str, case: str, dtype: str, backend: str, fn, device: str, repeats: int):
    """Time ``fn`` (median ms); an out-of-memory baseline is recorded as OOM and the check goes on."""
    try:
        ms = time_ms(fn, device, repeats)
    except oom_error() as err:
        if device == "cuda":
            torch.cuda.empty_cache()
        results.add(part, case, dtype, backend, "time", "OOM", note=str(err).split("\n")[0][:120])
        return None
    results.add(part, case, dtype, backend, "time", ms, "ms", note=f"median of {repeats} after 1 warm-up")
    return ms


def copy_bandwidth(results: Results, device: str, numel: int, dtype: torch.dtype, repeats: int) -> float:
    """Device-to-device copy of ``numel`` elements: bytes read + written per second (GB/s)."""
    src = torch.empty(numel, dtype=dtype, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, repeats)
    gbps = 2 * numel * src.element_size() / ms / 1e6
    results.add("logits loss", f"copy {numel} elements", str(dtype).removeprefix("torch."), "torch", "bandwidth", gbps,
                "GB/s", note="device-to-device copy, read + write")  # fmt: skip
    return gbps


def logits_loss(results: Results, sizes: Sizes, device: str, backends: list[str], peak_tbps: float | None) -> None:
    """The fused loss against eager and compiled PyTorch, and its achieved bandwidth."""
    params = check_scalars(**LOSS_ARGS, ignore_index=-100, reduction="mean", backend="reference")
    compiled = None
    try:
        compiled = torch.compile(lambda s, p, f, y: reference_loss(s, p, f, y, params))
    except Exception as err:  # an unsupported platform: recorded, and the other baselines still run
        results.add("logits loss", "torch.compile", "", "compile", "available", False, note=repr(err)[:120])
    for vocab in sizes.vocabularies:
        for name in ("bfloat16", "float32"):
            logits_case(results, sizes, device, backends, peak_tbps, vocab, name, params, compiled)
            if device == "cuda":
                torch.cuda.empty_cache()


def logits_case(results, sizes, device, backends, peak_tbps, vocab: int, name: str, params, compiled) -> None:
    """One (V, dtype) cell of `logits_loss`: every back end and baseline, timed on the same inputs."""
    n, dtype = sizes.logits_rows, DTYPES[name]
    case = f"N={n} V={vocab}"
    try:
        s, p, f, labels = inputs(n, vocab, dtype, device, strided=False, masked=False)
    except oom_error() as err:
        results.add("logits loss", case, name, "inputs", "time", "OOM", note=str(err).split("\n")[0][:120])
        return
    student = s.requires_grad_(True)

    def step(run):
        student.grad = None
        run().backward()

    copy_gbps = copy_bandwidth(results, device, n * vocab, dtype, sizes.repeats)
    runs = {b: (lambda b=b: hybrid_kd_loss(student, p, f, labels, backend=b, **LOSS_ARGS)) for b in backends}
    runs["eager"] = lambda: reference_loss(student, p, f, labels, params)
    if compiled is not None:
        runs["torch.compile"] = lambda: compiled(student, p, f, labels)
    for backend, run in runs.items():
        try:
            ms = measured(results, "logits loss", case, name, backend, lambda run=run: step(run), device, sizes.repeats)
        except Exception as err:  # a failing baseline (a compiler error): recorded, the others go on
            results.add("logits loss", case, name, backend, "time", "error", note=repr(err)[:120])
            continue
        if ms is None:
            continue
        gbps = 4 * n * vocab * s.element_size() / ms / 1e6  # 3 logit reads + 1 gradient write per row
        results.add("logits loss", case, name, backend, "bandwidth", gbps, "GB/s",
                    note="3 logit reads + 1 gradient write per row")  # fmt: skip
        results.add("logits loss", case, name, backend, "fraction of copy", gbps / copy_gbps)
        if peak_tbps:
            results.add("logits loss", case, name, backend, "fraction of nominal peak", gbps / (peak_tbps * 1e3),
                        note=f"nominal {peak_tbps} TB/s")  # fmt: skip


def linear_loss(results: Results, sizes: Sizes, device: str, backends: list[str]) -> None:
    """`hybrid_kd_linear_loss` against materialised logits: time and peak memory."""
    for head, rows, hidden, vocab in sizes.heads:
        linear_case(results, sizes, device, backends, f"{head} N={rows} H={hidden} V={vocab}", rows, hidden, vocab)
        if device == "cuda":
            torch.cuda.empty_cache()


def linear_case(results, sizes, device, backends, case: str, rows: int, hidden: int, vocab: int) -> None:
    dtype = torch.bfloat16
    g = torch.Generator().manual_seed(2)
    try:
        h, hp, hf = (torch.randn(rows, hidden, generator=g).to(device, dtype) for _ in range(3))
        w, wp, wf = ((torch.randn(vocab, hidden, generator=g) / math.sqrt(hidden)).to(device, dtype) for _ in range(3))
        labels = torch.randint(0, vocab, (rows,), generator=g).to(device)
    except oom_error() as err:
        results.add("linear loss", case, "bfloat16", "inputs", "time", "OOM", note=str(err).split("\n")[0][:120])
        return
    h.requires_grad_(True)
    w.requires_grad_(True)

    def fused(backend):
        h.grad = w.grad = None
        hybrid_kd_linear_loss(h, w, hp, wp, hf, wf, labels, backend=backend, **LOSS_ARGS).backward()

    def materialised(backend):
        h.grad = w.grad = None
        hybrid_kd_loss(h @ w.T, hp @ wp.T, hf @ wf.T, labels, backend=backend, **LOSS_ARGS).backward()

    for label, fn in [*((f"fused {b}", lambda b=b: fused(b)) for b in backends),
                      *((f"materialised {b}", lambda b=b: materialised(b)) for b in backends)]:  # fmt: skip
        ms = measured(results, "linear loss", case, "bfloat16", label, fn, device, sizes.repeats)
        if ms is None:
            continue
        try:
            mb = peak_mb(fn, device)
        except oom_error():
            mb = None
        if mb is not None:
            results.add("linear loss", case, "bfloat16", label, "peak memory", mb, "MB",
                        note="above the inputs, forward + backward")  # fmt: skip


def student_step(results: Results, sizes: Sizes, device: str, backends: list[str]) -> None:
    """One optimiser step of a randomly initialised SmolLM2-shaped model: plain CE against the hybrid loss."""
    try:
        from transformers import LlamaConfig, LlamaForCausalLM  # noqa: PLC0415  only this part needs transformers
    except ImportError:
        results.add("student step", "smollm2 config", "", "", "skipped", "transformers missing")
        return
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**sizes.student)).to(device=device, dtype=dtype)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch, length = sizes.batch
    vocab, hidden = sizes.student["vocab_size"], sizes.student["hidden_size"]
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, vocab, (batch, length), generator=g).to(device)
    labels = ids.clone()
    labels[:, : length // 2] = -100  # the prompt half is not trained on, as with response-only rows
    rows = int((labels[:, 1:] != -100).sum())
    # cached teacher hidden states on the response rows and the teachers' heads (random stand-ins of the same shapes)
    pre_h, fine_h = (torch.randn(rows, hidden, generator=g).to(device, dtype) for _ in range(2))
    pre_w, fine_w = ((torch.randn(vocab, hidden, generator=g) / math.sqrt(hidden)).to(device, dtype) for _ in range(2))
    case = f"{sizes.student['num_hidden_layers']} layers, {batch}x{length} tokens"

    def plain():
        optimizer.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()

    def hybrid(backend):
        optimizer.zero_grad(set_to_none=True)
        out = model.model(input_ids=ids).last_hidden_state[:, :-1]
        keep = labels[:, 1:] != -100
        loss = hybrid_kd_linear_loss(out[keep], model.lm_head.weight, pre_h, pre_w, fine_h, fine_w,
                                     labels[:, 1:][keep], backend=backend, **LOSS_ARGS)  # fmt: skip
        loss.backward()
        optimizer.step()

    plain_ms = measured(results, "student step", case, str(dtype).removeprefix("torch."), "plain", plain, device,
                        sizes.repeats)  # fmt: skip
    for backend in backends:
        ms = measured(results, "student step", case, str(dtype).removeprefix("torch."), f"hybrid {backend}",
                      lambda b=backend: hybrid(b), device, sizes.repeats)  # fmt: skip
        if ms is not None and plain_ms:
            results.add("student step", case, str(dtype).removeprefix("torch."), f"hybrid {backend}",
                        "ratio to plain", ms / plain_ms)  # fmt: skip


def peak_bandwidth(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((tbps for key, tbps in PEAK_TBPS.items() if key in name), None)


# The parts in the order they run: correctness first, so a cut-off run still says whether the kernel is right.
PARTS: dict[str, Callable] = {
    "correctness": lambda r, s, d, b, _: (check_logits(r, s, d, b), check_linear(r, s, d, b)),
    "logits": lambda r, s, d, b, peak: logits_loss(r, s, d, b, peak),
    "linear": lambda r, s, d, b, _: linear_loss(r, s, d, b),
    "student": lambda r, s, d, b, _: student_step(r, s, d, b),
}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="a new (or empty) folder for gpu_check.csv and gpu_check.md")
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU at tiny shapes, the kernel "
                        "under the Triton interpreter (TRITON_INTERPRET=1)")  # fmt: skip
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS), help="which parts to run")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"--out {str(out)!r}: exists and is not an empty folder; name a new one", file=sys.stderr)
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device found: run this on a GPU machine, or pass --dry-run for the CPU rehearsal",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # read when triton is imported: before the kernel module loads
    device = "cpu" if args.dry_run else "cuda"
    triton_version = None
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: PLC0415  heavy optional: triton, imported after TRITON_INTERPRET is set

        triton_version = triton.__version__
    else:
        print("triton is missing: the kernel rows are skipped; the torch parts run", file=sys.stderr)
    backends = (["triton"] if triton_version else []) + ["torch"]
    sizes = DRY if args.dry_run else GPU
    torch.manual_seed(0)
    np.random.seed(0)
    results = Results(out, header(device, args.dry_run, triton_version))
    written = results.flush(0)
    failed = False
    for name in args.parts:
        start = time.perf_counter()
        try:
            PARTS[name](results, sizes, device, backends, peak_bandwidth(device))
        except Exception:  # a broken part is recorded and the next one still runs
            failed = True
            results.add(name, "", "", "", "error", "error", ok=False, note=traceback.format_exc(limit=2)[-300:])
        results.add(name, "", "", "", "part time", time.perf_counter() - start, "s")
        written = results.flush(written)
        print(f"{name}: done in {time.perf_counter() - start:.1f} s", flush=True)
    bad = [r for r in results.rows if r["ok"] is False]
    (out / "gpu_check.json").write_text(json.dumps({"header": results.header, "failed": bad}, indent=1, default=str))
    print(f"{len(results.rows)} rows, {len(bad)} failed checks → {out / CSV_NAME}, {out / MD_NAME}")
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main())
