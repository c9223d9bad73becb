"""TrainSpec validation, FitResult's derived numbers, the TrainingArguments built for a stage, PeakMemory on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from hybridft.fitting import FitResult, PeakMemory, TrainSpec, training_arguments


def test_fit_result_throughput_and_divergence():
    ok = FitResult(train_time_s=2.0, samples=50, training_loss=0.7)
    assert ok.samples_per_s == 25.0 and not ok.diverged
    assert FitResult(1.0, 10, float("nan")).diverged and FitResult(1.0, 10, float("inf")).diverged
    assert math.isnan(FitResult(0.0, 10, 0.1).samples_per_s)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"learning_rate": 0.0}, "learning_rate must be a positive"),
        ({"learning_rate": float("inf")}, "learning_rate must be a positive"),
        ({"epochs": 0}, "epochs must be > 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"warmup_ratio": 1.0}, "warmup_ratio must be in"),
    ],
)
def test_train_spec_rejects_bad_values(change, message):
    with pytest.raises(ValueError, match=message):
        TrainSpec(**{"learning_rate": 1e-4, "epochs": 1.0, "batch_size": 8, "seed": 0, **change})


def test_training_arguments_are_quiet_seeded_and_cpu(tmp_path):
    spec = TrainSpec(learning_rate=3e-4, epochs=2.5, batch_size=6, seed=17, weight_decay=0.01, warmup_ratio=0.1)
    args = training_arguments(spec, tmp_path, progress=False, eval_batch_size=12)
    assert (args.learning_rate, args.num_train_epochs, args.per_device_train_batch_size) == (3e-4, 2.5, 6)
    assert (args.seed, args.data_seed, args.per_device_eval_batch_size) == (17, 17, 12)
    assert args.report_to == [] and args.save_strategy == "no" and args.disable_tqdm
    assert not args.logging_nan_inf_filter and args.dataloader_num_workers == 0
    assert args.use_cpu == (not torch.cuda.is_available())
    assert training_arguments(spec, tmp_path, progress=True, logging_steps=1).logging_steps == 1


_PEAK_PROBE = """
import json, time, torch
from hybridft.fitting import PeakMemory
with PeakMemory(interval_s=0.005, cpu=True) as quiet:
    pass
with PeakMemory(interval_s=0.005, cpu=True) as busy:
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, written so that it is resident
    time.sleep(0.05)  # several sampling intervals
    del block
print(json.dumps({"busy": busy.peak_mb, "quiet": quiet.peak_mb, "source": busy.source}))
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="the RSS sampler is the CPU path")
def test_peak_memory_sees_a_temporary_allocation():
    """In a fresh process, as PeakMemory(cpu=True) requires: in the test process the allocator may hand back memory
    that is already resident from earlier tests, and the RSS would not rise."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _PEAK_PROBE], capture_output=True, text=True, check=True, timeout=120)
    peaks = json.loads(out.stdout.strip().splitlines()[-1])
    assert peaks["busy"] >= 48
    assert peaks["quiet"] < 48
    assert peaks["source"] == "process_rss_rise"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_peak_memory_is_not_measured_in_a_shared_process_on_cpu():
    """In a long-lived process the RSS rise depends on what ran before: no number rather than a wrong one."""
    with PeakMemory(interval_s=0.005) as memory:
        torch.ones(2**20)
    assert memory.peak_mb is None and memory.source is None
