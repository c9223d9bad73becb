"""Kernel micro-benchmarks: `python -m bench.kernels.bench_hybrid_kd` times the fused loss back ends."""
