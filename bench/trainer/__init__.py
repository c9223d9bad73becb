"""Benchmarks of the training loop: the wall-time cost of a distillation epoch against a plain one."""
