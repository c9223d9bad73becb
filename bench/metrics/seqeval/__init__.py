"""Local evaluate module: seqeval.py (loaded through bench.metrics.load)."""
