"""CI guard on the fused-linear fallback: no slower than materialised logits + hybrid_kd_loss(backend="torch").

Like tests/benchmarks/test_loss_speed.py: its own alternating pairs, median ratio, floor and rationale in
bench/kernels/floors.json. The case is chunked by the default rule (two chunks), so the guard sees the chunk loop.
"""

from __future__ import annotations

import statistics

import pytest

from bench.kernels.bench_hybrid_kd import load_floor, paired_ratios, torch_threads
from bench.kernels.bench_linear import LinearCase, measure_paths, setup
from hybridft.linear_loss import auto_chunk_rows

GUARD = load_floor("hybrid_kd_linear_torch_vs_matmul_torch")


def guard_case(path: str) -> LinearCase:
    spec = GUARD["case"]
    return LinearCase(path, spec["rows"], spec["hidden"], spec["vocab"], spec["dtype"], spec["device"])


@pytest.mark.speed
def test_fused_linear_fallback_keeps_pace_with_materialised_logits():
    case = guard_case("fused_torch")
    assert auto_chunk_rows(case.rows, case.vocab, case.hidden) < case.rows  # the guard must exercise chunking
    with torch_threads(GUARD["threads"]):
        ratios = paired_ratios(setup(guard_case("matmul_torch")), setup(case), case.device, repeats=GUARD["repeats"])
    median = statistics.median(ratios)
    print(f"matmul_torch / fused_torch: median {median:.2f} (pairs: {', '.join(f'{r:.2f}' for r in ratios)})")
    assert median >= GUARD["floor"], (
        f"the fused-linear fallback runs at only {median:.2f}x the speed of matmuls + hybrid_kd_loss(torch) at "
        f"{GUARD['case']} (floor {GUARD['floor']}, see bench/kernels/floors.json); pairs {[round(r, 2) for r in ratios]}"
    )


def test_measure_paths_rows_and_ratios():
    """One small shape through the bench: every path timed and measured, ratios against both baselines."""
    cases = [LinearCase(path, 64, 16, 300) for path in ("fused_torch", "matmul_torch", "matmul_reference")]
    rows = measure_paths(cases, repeats=2)
    metrics = {(r["path"], r["metric"]): r["value"] for r in rows}
    for path in ("fused_torch", "matmul_torch", "matmul_reference"):
        assert metrics[(path, "time_ms_min")] <= metrics[(path, "time_ms_median")] <= metrics[(path, "time_ms_max")]
        # every path keeps at least the gradients of the student's hidden states and weight
        assert metrics[(path, "extra_peak_mib")] * 2**20 >= (64 * 16 + 300 * 16) * 4
    ratio = metrics[("fused_torch", "time_vs_matmul_torch")]
    assert ratio == pytest.approx(
        metrics[("fused_torch", "time_ms_median")] / metrics[("matmul_torch", "time_ms_median")]
    )
    assert ("matmul_torch", "time_vs_matmul_torch") not in metrics
