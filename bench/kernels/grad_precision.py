"""Gradient precision of hybrid_kd_loss in half precision against the float64 reference → results/kernels/.

`python -m bench.kernels.grad_precision` (from the repository root; the Triton back end runs under
TRITON_INTERPRET=1 without a GPU). For fp16 under GradScaler's loss scales (backward of scale·loss) and for bf16, per
back end: whether the gradient is finite, its normwise error ‖g − g_ref‖/‖g_ref‖ against the float64 reference of
tests/_loss_reference.py (scaled likewise), the same error for the exact gradient rounded once to the dtype (the
floor), the share of entries flushed to 0 where the exact value is a normal number, and the largest relative error.
One seeded (256, 384) case, α = 0.3, T = 2, mixed labels. Writes grad_precision.md with provenance.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from hybridft import hybrid_kd_loss
from hybridft.provenance import collect
from tests._loss_cases import make_inputs
from tests._loss_reference import hybrid_kd_reference

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported; ignored on a machine with CUDA tensors

CASES = (("float16", 65536.0), ("float16", 32768.0), ("bfloat16", 1.0))


def measure(backend: str, dtype_name: str, scale: float, rows: int = 256, classes: int = 384, seed: int = 1234):
    torch.manual_seed(seed)
    dtype = getattr(torch, dtype_name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    s, p, f, y = make_inputs(rows, classes, dtype, device=device)
    student = s.clone().requires_grad_(True)
    loss = hybrid_kd_loss(student, p, f, y, alpha=0.3, temperature=2.0, backend=backend)
    (loss * scale).backward()
    _, ref = hybrid_kd_reference(s, p, f, y, alpha=0.3, temperature=2.0)
    ref = ref * scale
    g = student.grad.double().cpu()
    normal = ref.abs() >= torch.finfo(dtype).tiny
    return {
        "backend": backend, "dtype": dtype_name, "loss_scale": scale, "rows": rows, "classes": classes, "seed": seed,
        "device": device, "finite": bool(torch.isfinite(g).all()),
        "normwise_error": float((g - ref).norm() / ref.norm()),
        "normwise_error_one_rounding": float((ref.to(dtype).double() - ref).norm() / ref.norm()),
        "flushed_to_zero": float(((g == 0) & normal).double().mean()),
        "max_relative_error": float(((g - ref).abs()[normal] / ref.abs()[normal]).max()),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernels.grad_precision", description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=Path("results/kernels"), help="folder for grad_precision.md")
    args = parser.parse_args(argv)

    rows = [measure(b, d, s) for b in ("torch", "triton", "reference") for d, s in CASES]
    prov = collect()
    lines = ["# Gradient precision in half precision (vs the float64 reference)", "",
             f"Hardware: {json.dumps(prov['hardware'])}; versions: {json.dumps(prov['versions'])}; "
             f"git {prov['git_revision']}{' (dirty)' if prov['git_dirty'] else ''}; {prov['timestamp']}", "",
             "| back end | dtype | loss scale | finite | normwise error | one rounding | flushed to 0 | max rel. error |",
             "|---|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['backend']} | {r['dtype']} | {r['loss_scale']:.0f} | {r['finite']} | "
                     f"{r['normwise_error']:.2e} | {r['normwise_error_one_rounding']:.2e} | "
                     f"{r['flushed_to_zero']:.2%} | {r['max_relative_error']:.2e} |")  # fmt: skip
    lines += ["", f"One seeded case per row: {rows[0]['rows']}×{rows[0]['classes']}, α 0.3, T 2, seed {rows[0]['seed']}, "
              f"device {rows[0]['device']}. `one rounding`: the exact gradient rounded once to the dtype (the floor).", ""]  # fmt: skip
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "grad_precision.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
