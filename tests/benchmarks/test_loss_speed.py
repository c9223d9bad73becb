"""Speed of the loss back ends: pytest-benchmark cases and the CI regression guard on the fallback's speed-up ratio.

The guard does its own timing (alternating pairs, median ratio), so it works the same with pytest's default
--benchmark-disable (under which pytest-benchmark runs a function once) and with --benchmark-enable. The floor, the
case and the measurements behind them are in bench/kernels/floors.json.
"""

from __future__ import annotations

import statistics

import pytest

from bench.kernels.bench_hybrid_kd import Case, load_floor, paired_speedups, setup, torch_threads

pytestmark = pytest.mark.speed
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


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_forward_backward_time(benchmark, backend):
    """Absolute fwd+bwd time of one back end at the guard's case (recorded with --benchmark-enable)."""
    case = guard_case(backend)
    inputs, fn = setup(case)
    benchmark.extra_info.update(rows=case.rows, classes=case.classes, dtype=case.dtype, threads=GUARD["threads"])
    with torch_threads(GUARD["threads"]):
        grad = benchmark.pedantic(fn, args=(inputs,), rounds=3, warmup_rounds=1)
    assert grad.shape == (case.rows, case.classes)
