"""Local evaluate module: squad.py (loaded through bench.metrics.load)."""
