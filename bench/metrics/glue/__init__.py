"""Local evaluate module: glue.py (loaded through bench.metrics.load)."""
