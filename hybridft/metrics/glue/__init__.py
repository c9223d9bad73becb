"""Local evaluate module: glue.py (loaded through hybridft.metrics.load)."""
