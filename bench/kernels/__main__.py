"""`python -m bench.kernels [rows|linear] [ARGS...]`: the loss micro-benchmarks (what `nox -s bench-kernels` runs).

python -m bench.kernels                  # both, with their defaults
python -m bench.kernels rows --shapes 1024x32000 --repeats 3     # bench_hybrid_kd only, its own arguments
python -m bench.kernels linear --shapes 1024x128x8192            # bench_linear only, its own arguments
"""

from __future__ import annotations

import sys

from bench.kernels import bench_hybrid_kd, bench_linear

BENCHES = {"rows": bench_hybrid_kd.main, "linear": bench_linear.main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in BENCHES:
        return BENCHES[argv[0]](argv[1:])
    if argv and argv[0] not in ("-h", "--help"):
        print(f"usage: python -m bench.kernels [{'|'.join(BENCHES)}] [ARGS...]; got {argv[0]!r}", file=sys.stderr)
        return 2
    if argv:
        print(__doc__)
        return 0
    return max(run([]) for run in BENCHES.values())


if __name__ == "__main__":
    sys.exit(main())
