"""Forward+backward time and extra peak memory of the hybrid KD loss back ends; long-format CSV in results/kernels/.

    python -m bench.kernels.bench_hybrid_kd                  # CPU shapes, plus the GPU shapes when CUDA is there
    python -m bench.kernels.bench_hybrid_kd --shapes 1024x32000 --backends torch reference --repeats 3

Back ends: "torch" (the chunked fallback), "reference" (functional ops + autograd), "compiled_reference"
(torch.compile of the reference), and "triton" (the fused kernel; CUDA only here, the interpreter is not timed).
Every case times loss(...).backward() on a fresh leaf student, after warm-up (which also compiles).

Measurements:
- time: `repeats` timed runs; median with quartiles, min and max (ms).
- GB/s against the floor: bytes of 3 logit reads + 1 gradient write, divided by the median time.
- extra peak memory: on CUDA, torch.cuda.max_memory_allocated during the run minus the allocation before it. On CPU
  there is no allocator counter, so one extra run goes under the torch profiler with profile_memory=True and the
  peak of its running "Total Allocated" (every allocation minus every free since the profiler started, from the
  CPU allocator's memory events) is taken. Both count the gradient that ends in student.grad, for every back end.
Rows carry hybridft.provenance.collect(); a rerun replaces the rows of its own (device, back end, shape, dtype).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from tqdm.auto import tqdm

from bench.runner import torch_threads  # also imported from here by bench_linear and the speed tests
from hybridft import hybrid_kd_loss
from hybridft.loss import reference_loss
from hybridft.loss_checks import check_scalars
from hybridft.provenance import collect, device_label

BACKENDS = ("torch", "reference", "compiled_reference", "triton")
CPU_SHAPES = ((4096, 2), (16384, 9), (4096, 384), (4096, 32000))
GPU_SHAPES = ((16384, 32000), (16384, 128000))
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "results" / "kernels" / "hybrid_kd.csv"
KEY_FIELDS = ("device_label", "threads", "backend", "rows", "classes", "dtype")
FIELDS = (
    *KEY_FIELDS, "device", "metric", "value", "unit", "method",
    "alpha", "beta", "gamma", "temperature", "ce_weight",
    "hardware", "versions", "python", "git_revision", "git_dirty", "timestamp",
)  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One benchmark case. The loss settings exercise every term: blend, both KLs at T ≠ 1, CE on most rows."""

    backend: str
    rows: int
    classes: int
    dtype: str = "float32"
    device: str = "cpu"
    alpha: float = 0.3
    beta: float = 1.0
    gamma: float = 1.0
    temperature: float = 2.0
    ce_weight: float = 1.0

    def floor_bytes(self) -> int:
        """3 logit tensors read once + 1 gradient written once."""
        return 4 * self.rows * self.classes * getattr(torch, self.dtype).itemsize


def _compiled_reference(params):
    compiled = torch.compile(lambda s, p, f, y: reference_loss(s, p, f, y, params), dynamic=False)

    def loss(student, pre, fine, labels):
        return compiled(student, pre.detach(), fine.detach(), labels)

    return loss


def setup(case: Case) -> tuple[tuple[torch.Tensor, ...], Callable[[tuple[torch.Tensor, ...]], torch.Tensor]]:
    """(inputs, fn): fresh random logits and labels for the case, and fn(inputs) running forward + backward."""
    dtype = getattr(torch, case.dtype)
    gen = torch.Generator(device="cpu").manual_seed(0)
    student, pre, fine = (
        (torch.randn(case.rows, case.classes, generator=gen) * 2).to(device=case.device, dtype=dtype) for _ in range(3)
    )
    labels = torch.randint(0, case.classes, (case.rows,), generator=gen)
    labels[::7] = -100
    labels = labels.to(case.device)
    kwargs = dict(
        alpha=case.alpha, beta=case.beta, gamma=case.gamma, temperature=case.temperature, ce_weight=case.ce_weight
    )
    if case.backend == "compiled_reference":
        loss_fn = _compiled_reference(check_scalars(**kwargs, ignore_index=-100, reduction="mean", backend="auto"))
    else:

        def loss_fn(s, p, f, y):
            return hybrid_kd_loss(s, p, f, y, backend=case.backend, **kwargs)

    def fn(inputs):
        s, p, f, y = inputs
        leaf = s.detach().requires_grad_(True)
        loss = loss_fn(leaf, p, f, y)
        loss.backward()
        return leaf.grad

    return (student, pre, fine, labels), fn


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(fn, inputs, device: str, *, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of `repeats` calls after `warmup` untimed ones (the device synchronised around each)."""
    for _ in range(warmup):
        fn(inputs)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn(inputs)
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _cpu_profiler_peak(fn, inputs) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(inputs)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max([0, *totals])


def extra_peak_bytes(fn, inputs, device: str) -> int:
    """Peak bytes allocated by one call beyond what was allocated before it (see the module docstring)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn(inputs)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    return _cpu_profiler_peak(fn, inputs)


def memory_method(device: str) -> str:
    if device.startswith("cuda"):
        return "torch.cuda.max_memory_allocated minus allocated before the call"
    return "torch profiler profile_memory: peak of running Total Allocated (CPU allocator events) during one call"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def measure(case: Case, repeats: int) -> list[dict[str, object]]:
    """Metric rows (metric, value, unit, method) of one case; an out-of-memory case gives one "oom" row."""
    inputs, fn = setup(case)
    try:
        times = time_fn(fn, inputs, case.device, repeats=repeats)
        peak = extra_peak_bytes(fn, inputs, case.device)
    except torch.OutOfMemoryError:
        return [{"metric": "oom", "value": 1, "unit": "flag", "method": "torch.OutOfMemoryError during the case"}]
    finally:
        del inputs
    rows = timing_rows(times, f"wall time of loss + backward, {repeats} runs after 1 warm-up")
    gbps = case.floor_bytes() / (statistics.median(times) * 1e9)
    rows.append({"metric": "gbps_floor", "value": gbps, "unit": "GB/s", "method": "(3 reads + 1 write) / median"})
    rows.append(
        {"metric": "extra_peak_mib", "value": peak / 2**20, "unit": "MiB", "method": memory_method(case.device)}
    )
    return rows


def timing_rows(seconds: list[float], method: str) -> list[dict[str, object]]:
    """time_ms_{median,q1,q3,min,max} metric rows of timed runs (seconds)."""
    ms = [t * 1e3 for t in seconds]
    stats = (
        ("median", statistics.median(ms)), ("q1", quantile(ms, 0.25)), ("q3", quantile(ms, 0.75)),
        ("min", min(ms)), ("max", max(ms)),
    )  # fmt: skip
    return [{"metric": f"time_ms_{stat}", "value": value, "unit": "ms", "method": method} for stat, value in stats]


def provenance_fields() -> dict[str, object]:
    """The provenance columns every kernel-benchmark row carries (hybridft.provenance.collect, flattened)."""
    provenance = collect()
    return {
        "device_label": device_label(), "python": provenance["python"],
        "hardware": json.dumps(provenance["hardware"], sort_keys=True),
        "versions": json.dumps(provenance["versions"], sort_keys=True),
        "git_revision": provenance["git_revision"], "git_dirty": provenance["git_dirty"],
        "timestamp": provenance["timestamp"],
    }  # fmt: skip


def paired_speedups(slow: Case, fast: Case, *, repeats: int, threads: int | None = 1) -> list[float]:
    """Per-pair time ratios slow/fast, the two cases timed alternately so that machine noise hits both alike.

    One thread by default: the fallback issues many small ops, and OpenMP's spinning workers make such code erratic
    on a CPU shared with other jobs; one thread measures the work each back end does, not the scheduler.
    """
    with torch_threads(threads):
        return paired_ratios(setup(slow), setup(fast), slow.device, repeats=repeats)


def paired_ratios(slow, fast, device: str, *, repeats: int) -> list[float]:
    """time(slow)/time(fast) per alternating pair, after one warm-up each; slow and fast are (inputs, fn)."""
    (slow_in, slow_fn), (fast_in, fast_fn) = slow, fast
    slow_fn(slow_in), fast_fn(fast_in)  # warm-up
    ratios = []
    for _ in range(repeats):
        slow_time = time_fn(slow_fn, slow_in, device, repeats=1, warmup=0)[0]
        fast_time = time_fn(fast_fn, fast_in, device, repeats=1, warmup=0)[0]
        ratios.append(slow_time / fast_time)
    return ratios


FLOORS_FILE = Path(__file__).resolve().parent / "floors.json"


def load_floor(name: str) -> dict[str, object]:
    """One entry of floors.json: the guarded ratio's case, its floor and the measurements behind it."""
    floors = json.loads(FLOORS_FILE.read_text())
    if name not in floors:
        raise KeyError(f"{FLOORS_FILE} has no entry {name!r}; entries: {sorted(floors)}")
    return floors[name]


def add_ratios(rows: list[dict[str, object]]) -> None:
    """speedup_vs_reference and memory_ratio_vs_reference for every back end of a shape that has a reference."""
    index = {(r["backend"], r["rows"], r["classes"], r["dtype"], r["metric"]): r["value"] for r in rows}
    derived = []
    for r in rows:
        ref_key = ("reference", r["rows"], r["classes"], r["dtype"])
        if r["backend"] == "reference" or r["metric"] not in ("time_ms_median", "extra_peak_mib"):
            continue
        ref = index.get((*ref_key, r["metric"]))
        if ref is None or not r["value"]:
            continue
        if r["metric"] == "time_ms_median":
            name, value, method = "speedup_vs_reference", ref / r["value"], "reference median / this median"
        else:
            name, value, method = "memory_ratio_vs_reference", r["value"] / ref, "this peak / reference peak"
        derived.append({**r, "metric": name, "value": value, "unit": "ratio", "method": method})
    rows.extend(derived)


def write_rows(path: Path, new_rows: list[dict[str, object]], key_fields=KEY_FIELDS, fields=FIELDS) -> None:
    """Merge into the CSV: rows with the same key as a new row are replaced, the rest kept; atomic replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = {tuple(str(r[k]) for k in key_fields) for r in new_rows}
    kept = []
    if path.exists():
        with path.open(newline="") as fh:
            kept = [r for r in csv.DictReader(fh) if tuple(r[k] for k in key_fields) not in keys]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
        writer.writerows(new_rows)
    os.replace(tmp, path)


def _summary_line(key: tuple, cells: dict[str, str]) -> str:
    def num(metric: str, fmt: str = "{:.4g}") -> str:
        return fmt.format(float(cells[metric])) if metric in cells else "–"

    label, _device, threads, rows, classes, dtype, backend = key
    ms = "OOM" if "oom" in cells else f"{num('time_ms_median')} [{num('time_ms_q1')}, {num('time_ms_q3')}]"
    return (
        f"| {label} | {threads} | {rows} × {classes} | {dtype} | {backend} | {ms} | {num('gbps_floor')} | "
        f"{num('extra_peak_mib')} | {num('speedup_vs_reference', '{:.2f}×')} | {num('memory_ratio_vs_reference', '{:.2f}')} |"
    )


def write_summary(csv_path: Path) -> Path:
    """Markdown table next to the CSV (same name, .md), generated only from the CSV's rows."""
    with csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    cells: dict[tuple, dict[str, str]] = {}
    for r in rows:
        shape = (int(r["threads"]), int(r["rows"]), int(r["classes"]), r["dtype"], r["backend"])
        cells.setdefault((r["device_label"], r["device"], *shape), {})[r["metric"]] = r["value"]
    order = {name: i for i, name in enumerate(BACKENDS)}
    head = "| device | threads | N × C | dtype | back end | ms | GB/s | extra peak MiB | speed-up vs ref | mem vs ref |"
    lines = [
        f"# hybrid_kd_loss: forward+backward, generated from {csv_path.name}",
        "",
        "ms: median [q1, q3] of the timed runs. GB/s: (3 logit reads + 1 gradient write) / median time.",
        f"Extra peak memory: CPU: {memory_method('cpu')}; CUDA: {memory_method('cuda')}.",
        "",
        head,
        "|---" * (head.count("|") - 1) + "|",
    ]
    by_shape = sorted(cells, key=lambda k: (k[0], k[1], k[3] * k[4], k[4], k[2], order.get(k[6], len(order))))
    lines += [_summary_line(key, cells[key]) for key in by_shape]
    md_path = csv_path.with_suffix(".md")
    md_path.write_text("\n".join(lines) + "\n")
    return md_path


def build_cases(args) -> list[Case]:
    cases = []
    cpu_backends = [b for b in args.backends if b != "triton"]
    for rows, classes in args.shapes or CPU_SHAPES:
        cases += [Case(b, rows, classes, "float32", "cpu") for b in cpu_backends]
    if torch.cuda.is_available() and not args.cpu_only:
        for rows, classes in args.gpu_shapes or GPU_SHAPES:
            cases += [Case(b, rows, classes, "bfloat16", "cuda") for b in args.backends]
    return cases


def _shape(text: str) -> tuple[int, int]:
    rows, classes = text.lower().split("x")
    return int(rows), int(classes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=_shape, nargs="+", help="CPU shapes as NxC (default: the four CPU shapes)")
    parser.add_argument("--gpu-shapes", type=_shape, nargs="+", help="CUDA shapes as NxV (default 16384x{32k,128k})")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for the CPU cases (default: torch's)")
    parser.add_argument("--cpu-only", action="store_true", help="skip the CUDA cases even when a GPU is present")
    parser.add_argument("--summary-only", action="store_true", help="only regenerate the .md summary from the CSV")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"CSV to merge into (default {DEFAULT_OUT})")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summary_only:
        print(f"wrote {write_summary(args.out)}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    common = {**provenance_fields(), "threads": torch.get_num_threads()}
    rows = []
    for case in tqdm(build_cases(args), desc="hybrid_kd", unit="case", dynamic_ncols=True):
        for metric in measure(case, args.repeats):
            rows.append({**common, **asdict(case), **metric})
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()
    add_ratios(rows)
    write_rows(args.out, rows)
    print_summary(rows, args.out)
    print(f"wrote {write_summary(args.out)}")
    return 0


def print_summary(rows: list[dict[str, object]], out: Path) -> None:
    print(f"wrote {len(rows)} rows to {out}")
    show = ("time_ms_median", "time_ms_q1", "time_ms_q3", "gbps_floor", "extra_peak_mib")
    show += ("speedup_vs_reference", "memory_ratio_vs_reference")
    table: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r["metric"] in show:
            table.setdefault((r["device"], r["rows"], r["classes"], r["dtype"], r["backend"]), {})[r["metric"]] = r[
                "value"
            ]
    for key, values in table.items():
        cells = "  ".join(f"{m}={values[m]:.4g}" for m in show if m in values)
        print(f"{key[0]:>4} {key[1]:>6}x{key[2]:<7} {key[3]:<8} {key[4]:<18} {cells}")


if __name__ == "__main__":
    sys.exit(main())
