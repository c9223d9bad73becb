"""Local evaluate module: squad.py (loaded through hybridft.metrics.load)."""
