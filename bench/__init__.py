"""The benchmark suite: `python -m bench` runs a profile's matrix, `python -m bench.tables DIR` writes its tables.

Modules: `profiles` (profile files → frozen dataclasses → the run matrix), `runner` (runs the matrix, resumable,
shardable), `records` (runs.jsonl: atomic, keyed by config hash), `tables` and `plots` (generated only from the
records). Kernel micro-benchmarks live in `bench.kernels`.
"""
