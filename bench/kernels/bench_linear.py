"""Forward+backward time and extra peak memory of hybrid_kd_linear_loss against materialised logits → results/kernels/.

    python -m bench.kernels.bench_linear                         # CPU: (4096, 576, 49152) fp32; GPU shapes on CUDA
    python -m bench.kernels.bench_linear --shapes 1024x128x8192 --repeats 3

Paths (each one full step: the three heads' logits, the loss, and backward into the student's hidden states and
head weight; the teachers' hidden states and weights are constants):
- ``fused_torch`` / ``fused_triton``: ``hybrid_kd_linear_loss(backend=...)``, no (N, V) tensor;
- ``matmul_torch`` / ``matmul_triton``: ``F.linear`` three times, then ``hybrid_kd_loss(backend=...)``;
- ``matmul_reference``: ``F.linear`` three times, then ``hybrid_kd_loss(backend="reference")``.
The ``*_triton`` paths run on CUDA only. The case is SmolLM2's head: no bias, α = 0.3, T = 2, β = γ = 1, CE on
about 6 rows in 7. The paths are timed in alternating rounds (one run of each per round, after one warm-up each), so
machine noise hits them alike; the ratios to ``matmul_torch`` and ``matmul_reference`` are of medians from one run.
Extra peak memory is measured as in bench_hybrid_kd (CPU: the torch profiler's allocator events; CUDA:
max_memory_allocated), over one more call per path; it includes the gradients of the student's hidden states and
weight, which every path makes. Rows carry provenance; a rerun replaces the rows of its own key.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.kernels.bench_hybrid_kd import (
    extra_peak_bytes,
    memory_method,
    provenance_fields,
    time_fn,
    timing_rows,
    torch_threads,
    write_rows,
)
from hybridft import hybrid_kd_linear_loss, hybrid_kd_loss

PATHS = ("fused_torch", "fused_triton", "matmul_torch", "matmul_triton", "matmul_reference")
CPU_SHAPES = ((4096, 576, 49152),)
GPU_SHAPES = ((16384, 576, 49152), (16384, 4096, 49152), (16384, 576, 128256), (16384, 4096, 128256))
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "results" / "kernels" / "hybrid_kd_linear.csv"
KEY_FIELDS = ("device_label", "threads", "path", "rows", "hidden", "vocab", "dtype")
FIELDS = (
    *KEY_FIELDS, "device", "metric", "value", "unit", "method", "alpha", "temperature", "seed",
    "hardware", "versions", "python", "git_revision", "git_dirty", "timestamp",
)  # fmt: skip
BASELINES = ("matmul_torch", "matmul_reference")


@dataclass(frozen=True)
class LinearCase:
    path: str
    rows: int
    hidden: int
    vocab: int
    dtype: str = "float32"
    device: str = "cpu"
    alpha: float = 0.3
    temperature: float = 2.0
    seed: int = 0


def setup(case: LinearCase):
    """(inputs, fn): seeded hidden states, weights and labels, and fn(inputs) running one forward + backward that
    returns the student's (hidden, weight) gradients."""
    dtype = getattr(torch, case.dtype)
    gen = torch.Generator().manual_seed(case.seed)

    def tensor(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=case.device, dtype=dtype)

    w_scale = 4.0 / case.hidden**0.5  # logits of a few units, as a trained head gives
    h_s, h_p, h_f = (tensor(case.rows, case.hidden) for _ in range(3))
    w_s, w_p, w_f = (tensor(case.vocab, case.hidden, scale=w_scale) for _ in range(3))
    labels = torch.randint(0, case.vocab, (case.rows,), generator=gen)
    labels[::7] = -100
    labels = labels.to(case.device)
    kwargs = dict(alpha=case.alpha, temperature=case.temperature)
    kind, _, backend = case.path.partition("_")

    def fn(inputs):
        h_s, w_s, h_p, w_p, h_f, w_f, labels = inputs
        hidden, weight = h_s.detach().requires_grad_(True), w_s.detach().requires_grad_(True)
        if kind == "fused":
            loss = hybrid_kd_linear_loss(hidden, weight, h_p, w_p, h_f, w_f, labels, backend=backend, **kwargs)
        else:
            with torch.no_grad():
                pre, fine = torch.nn.functional.linear(h_p, w_p), torch.nn.functional.linear(h_f, w_f)
            student = torch.nn.functional.linear(hidden, weight)
            loss = hybrid_kd_loss(student, pre, fine, labels, backend=backend, **kwargs)
        loss.backward()
        return hidden.grad, weight.grad

    return (h_s, w_s, h_p, w_p, h_f, w_f, labels), fn


def measure_paths(cases: list[LinearCase], repeats: int) -> list[dict[str, object]]:
    """Metric rows of every case of one shape: alternating timed rounds, then one memory run per path."""
    prepared = {case.path: setup(case) for case in cases}
    device = cases[0].device
    times: dict[str, list[float]] = {path: [] for path in prepared}
    failed: dict[str, str] = {}
    for path, (inputs, fn) in prepared.items():  # warm-up (and a first check that the path fits in memory)
        try:
            time_fn(fn, inputs, device, repeats=0, warmup=1)
        except torch.OutOfMemoryError:
            failed[path] = "oom"
    for _ in range(repeats):
        for path, (inputs, fn) in prepared.items():
            if path not in failed:
                times[path] += time_fn(fn, inputs, device, repeats=1, warmup=0)
    rows = []
    for case in cases:
        if case.path in failed:
            rows.append({**asdict(case), "metric": "oom", "value": 1, "unit": "flag", "method": "OutOfMemoryError"})
            continue
        inputs, fn = prepared[case.path]
        peak = extra_peak_bytes(fn, inputs, device)
        timing = f"wall time of forward + backward, {repeats} alternating rounds after 1 warm-up"
        rows += [{**asdict(case), **row} for row in timing_rows(times[case.path], timing)]
        rows.append(
            {**asdict(case), "metric": "extra_peak_mib", "value": peak / 2**20, "unit": "MiB",
             "method": memory_method(device)}
        )  # fmt: skip
    add_ratios(rows)
    return rows


def add_ratios(rows: list[dict[str, object]]) -> None:
    """time_vs_<baseline> (this median / baseline median) and memory_vs_<baseline> for every path of a shape."""
    index = {(r["path"], r["rows"], r["hidden"], r["vocab"], r["dtype"], r["metric"]): r["value"] for r in rows}
    derived = []
    for r in rows:
        if r["metric"] not in ("time_ms_median", "extra_peak_mib"):
            continue
        for base in BASELINES:
            ref = index.get((base, r["rows"], r["hidden"], r["vocab"], r["dtype"], r["metric"]))
            if r["path"] == base or not ref:
                continue
            kind = "time" if r["metric"] == "time_ms_median" else "memory"
            derived.append(
                {**r, "metric": f"{kind}_vs_{base}", "value": r["value"] / ref, "unit": "ratio",
                 "method": f"this {r['metric']} / {base}'s"}
            )  # fmt: skip
    rows.extend(derived)


def write_summary(csv_path: Path) -> Path:
    """Markdown table next to the CSV, generated only from its rows."""
    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    cells: dict[tuple, dict[str, str]] = {}
    for r in rows:
        key = (r["device_label"], r["threads"], int(r["rows"]), int(r["hidden"]), int(r["vocab"]), r["dtype"])
        cells.setdefault((*key, r["path"]), {})[r["metric"]] = r["value"]
        cells[(*key, r["path"])]["git"] = r["git_revision"][:7] + ("+dirty" if r["git_dirty"] == "True" else "")

    def num(values, metric, fmt="{:.4g}"):
        return fmt.format(float(values[metric])) if metric in values else "–"

    order = {name: i for i, name in enumerate(PATHS)}
    head = (
        "| device | threads | N × H → V | dtype | path | ms | extra peak MiB | time vs matmul_torch | "
        "memory vs matmul_reference | git |"
    )
    lines = [
        f"# hybrid_kd_linear_loss: forward+backward from hidden states, generated from {csv_path.name}",
        "",
        "ms: median [q1, q3] over alternating rounds. Extra peak memory: CPU: "
        f"{memory_method('cpu')}; CUDA: {memory_method('cuda')}. Ratios are of one run's medians (bench/kernels/"
        "bench_linear.py). `fused_*`: hybrid_kd_linear_loss; `matmul_*`: F.linear ×3, then hybrid_kd_loss.",
        "",
        head,
        "|---" * (head.count("|") - 1) + "|",
    ]
    for key in sorted(cells, key=lambda k: (k[:6], order.get(k[6], len(order)))):
        values = cells[key]
        label, threads, rows_, hidden, vocab, dtype, path = key
        ms = "OOM" if "oom" in values else (
            f"{num(values, 'time_ms_median')} [{num(values, 'time_ms_q1')}, {num(values, 'time_ms_q3')}]"
        )  # fmt: skip
        lines.append(
            f"| {label} | {threads} | {rows_} × {hidden} → {vocab} | {dtype} | {path} | {ms} | "
            f"{num(values, 'extra_peak_mib')} | {num(values, 'time_vs_matmul_torch', '{:.2f}×')} | "
            f"{num(values, 'memory_vs_matmul_reference', '{:.3f}')} | {values['git']} |"
        )
    md_path = csv_path.with_suffix(".md")
    md_path.write_text("\n".join(lines) + "\n")
    return md_path


def _shape(text: str) -> tuple[int, int, int]:
    try:
        rows, hidden, vocab = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is NxHxV, e.g. 4096x576x49152, got {text!r}") from None
    return rows, hidden, vocab


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=_shape, nargs="+", help="CPU shapes NxHxV (default 4096x576x49152)")
    parser.add_argument("--gpu-shapes", type=_shape, nargs="+", help="CUDA shapes NxHxV (default: 16384 × {576, 4096} "
                        "× {49152, 128256})")  # fmt: skip
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed rounds per shape (default 3)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for the CPU cases (default: torch's)")
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA cases even when a GPU is present")
    parser.add_argument("--summary-only", action="store_true", help="only regenerate the .md summary from the CSV")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"CSV to merge into (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def build_shapes(args) -> list[list[LinearCase]]:
    """The cases, grouped by shape (one group is timed in alternating rounds)."""
    groups = []
    cpu_paths = [p for p in args.paths if not p.endswith("_triton")]
    for rows, hidden, vocab in args.shapes or CPU_SHAPES:
        groups.append([LinearCase(p, rows, hidden, vocab) for p in cpu_paths])
    if torch.cuda.is_available() and not args.cpu_only:
        for rows, hidden, vocab in args.gpu_shapes or GPU_SHAPES:
            groups.append([LinearCase(p, rows, hidden, vocab, "bfloat16", "cuda") for p in args.paths])
    return groups


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summary_only:
        print(f"wrote {write_summary(args.out)}")
        return 0
    rows = []
    with torch_threads(args.threads):
        common = provenance_fields()  # inside, so that its hardware.torch_threads is the count the cases ran with
        for group in tqdm(build_shapes(args), desc="hybrid_kd_linear", unit="shape", dynamic_ncols=True):
            threads = torch.get_num_threads() if group[0].device == "cpu" else 0
            for row in measure_paths(group, args.repeats):
                rows.append({**common, "threads": threads, **row})
                if row["metric"].startswith(("time_vs", "memory_vs")) or row["metric"] == "time_ms_median":
                    print(f"{row['path']:>16} {row['rows']}x{row['hidden']}x{row['vocab']} {row['metric']}: "
                          f"{row['value']:.4g}")  # fmt: skip
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
    write_rows(args.out, rows, KEY_FIELDS, FIELDS)
    print(f"wrote {len(rows)} rows to {args.out}")
    print(f"wrote {write_summary(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
