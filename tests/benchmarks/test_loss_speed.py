"""Speed of the loss back ends: pytest-benchmark cases and the CI regression guard on the fallback's speed-up ratio.

The guard does its own timing (alternating pairs, median ratio), so it works the same with pytest's default
--benchmark-disable (under which pytest-benchmark runs a function once) and with --benchmark-enable. The floor, the
case and the measurements behind them are in bench/kernels/floors.json.
"""

from __future__ import annotations

import csv
import statistics

import pytest

from bench.kernels.bench_hybrid_kd import (
    Case,
    add_ratios,
    load_floor,
    measure,
    paired_speedups,
    setup,
    torch_threads,
    write_rows,
    write_summary,
)

GUARD = load_floor("hybrid_kd_torch_vs_reference")


def guard_case(backend: str) -> Case:
    spec = GUARD["case"]
    return Case(
        backend,
        spec["rows"],
        spec["classes"],
        spec["dtype"],
        spec["device"],
        spec["alpha"],
        temperature=spec["temperature"],
    )


@pytest.mark.speed
def test_fallback_speedup_over_reference_stays_above_floor():
    ratios = paired_speedups(
        guard_case("reference"), guard_case("torch"), repeats=GUARD["repeats"], threads=GUARD["threads"]
    )
    median = statistics.median(ratios)
    print(f"torch fallback vs reference: median speed-up {median:.2f} (pairs: {', '.join(f'{r:.2f}' for r in ratios)})")
    assert median >= GUARD["floor"], (
        f"the torch fallback is only {median:.2f}x faster than the reference at {GUARD['case']} (floor "
        f"{GUARD['floor']}, see bench/kernels/floors.json); pair ratios: {[round(r, 2) for r in ratios]}"
    )


@pytest.mark.speed
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_forward_backward_time(benchmark, backend):
    """Absolute fwd+bwd time of one back end at the guard's case (recorded with --benchmark-enable)."""
    case = guard_case(backend)
    inputs, fn = setup(case)
    benchmark.extra_info.update(rows=case.rows, classes=case.classes, dtype=case.dtype, threads=GUARD["threads"])
    with torch_threads(GUARD["threads"]):
        grad = benchmark.pedantic(fn, args=(inputs,), rounds=3, warmup_rounds=1)
    assert grad.shape == (case.rows, case.classes)


def test_measure_counts_at_least_the_gradient():
    """The CPU peak-memory method sees real allocations: every back end keeps at least the (N, C) gradient."""
    for backend in ("torch", "reference"):
        metrics = {m["metric"]: m["value"] for m in measure(Case(backend, 64, 500), repeats=2)}
        assert metrics["extra_peak_mib"] * 2**20 >= 64 * 500 * 4
        assert metrics["time_ms_min"] <= metrics["time_ms_median"] <= metrics["time_ms_max"]
        assert metrics["gbps_floor"] > 0


def test_rerun_replaces_its_own_rows(tmp_path):
    path = tmp_path / "hybrid_kd.csv"
    base = {"device_label": "cpu-x", "rows": 8, "classes": 5, "dtype": "float32", "device": "cpu", "unit": "ms"}

    def row(backend, value, threads=1):
        return {**base, "backend": backend, "threads": threads, "metric": "time_ms_median", "value": value}

    first = [row("torch", 2.0), row("reference", 6.0)]
    add_ratios(first)  # adds torch's speedup_vs_reference = 3
    write_rows(path, first)
    write_rows(path, [row("torch", 3.0), row("torch", 9.0, threads=2)])
    with path.open(newline="") as fh:
        got = {(r["backend"], r["threads"], r["metric"]): float(r["value"]) for r in csv.DictReader(fh)}
    assert got == {
        ("torch", "1", "time_ms_median"): 3.0,  # replaced, and its old derived speed-up row went with it
        ("reference", "1", "time_ms_median"): 6.0,  # another key: kept
        ("torch", "2", "time_ms_median"): 9.0,  # another thread count: a separate key
    }
    assert "| cpu-x | 1 | 8 × 5 | float32 | torch | 3 [" in write_summary(path).read_text()
