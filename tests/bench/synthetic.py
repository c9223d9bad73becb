"""Realistic synthetic run records for formatting tests (never used for results/)."""

from __future__ import annotations

import hashlib
import json

PROVENANCE = {
    "hardware": {"cpu": "Test CPU", "cpu_count": 2, "memory_gib": 24.0, "gpu": None, "torch_threads": 2},
    "versions": {"torch": "2.13.0", "transformers": "4.57.6", "peft": "0.21.2", "adapters": "1.3.0"},
    "python": "3.11.7",
    "git_revision": "0123456789abcdef0123456789abcdef01234567",
    "git_dirty": False,
    "timestamp": "2026-01-01T00:00:00+00:00",
}
HEADLINES = {"cola": ("matthews_correlation", "glue"), "rte": ("accuracy", "glue"),
             "squad_devsplit": ("f1", "squad"), "conll2003": ("overall_f1", "seqeval")}  # fmt: skip


def make_record(task: str, method: str, seed: int, headline: float | None, *, status: str = "ok",
                model: str = "minilm", trainable: int = 22_700_000, timestamp: str | None = None,
                **extra) -> dict:  # fmt: skip
    """One runs.jsonl row as bench.runner.build_record writes it."""
    metric, module = HEADLINES.get(task, ("accuracy", "glue"))
    config = {"task": task, "method": method, "seed": seed, "model": model, "train_size": 512, "eval_size": 256,
              "max_length": 128, "epochs": 1.0, "batch_size": 16, "eval_batch_size": 64, "learning_rate": None,
              "method_args": []}  # fmt: skip
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    record = {
        "key": key, "kind": "run", "task": task, "method": method, "seed": seed, "model": model,
        "profile": "quick", "task_kind": "classification", "metric_name": module, "config_hash": key,
        "config": config, "alphas": None, "wall_time_s": 12.5, "status": status,
        "metrics": {metric: headline} if headline is not None else {}, "headline_metric": metric,
        "headline": headline, "trainable_params": trainable, "total_params": 22_700_000,
        "train_time_s": 10.0, "eval_time_s": 1.5, "peak_memory_mb": 900.0, "train_samples_per_s": 51.2,
        "subsets": {"train": {"task": task, "split": "train", "size": 512, "seed": seed, "fingerprint": "ab" * 8}},
        **PROVENANCE,
    }  # fmt: skip
    if timestamp:
        record["timestamp"] = timestamp
    if status == "failed":
        record.update(error={"type": "RuntimeError", "message": "CUDA out of memory\nmore", "traceback": "tb"},
                      headline=None, metrics={})  # fmt: skip
        for k in ("headline_metric", "trainable_params", "total_params", "train_time_s", "eval_time_s",
                  "peak_memory_mb", "train_samples_per_s", "subsets"):  # fmt: skip
            record.pop(k)
    record.update(extra)
    return record
