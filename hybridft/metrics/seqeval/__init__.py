"""Local evaluate module: seqeval.py (loaded through hybridft.metrics.load)."""
