"""Kernel micro-benchmarks: `python -m bench.kernels` runs both; `bench_hybrid_kd` times the loss back ends on
logits, `bench_linear` the fused-linear loss from hidden states against materialised logits."""
