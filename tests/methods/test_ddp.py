"""Two processes under torchrun (gloo, CPU) train the distillation stage to the same loss and weights as one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .ddp_worker import run_stage

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_distillation_matches_one_process(data_dir, tmp_path):
    single = run_stage(tmp_path / "single" / "out.json", str(data_dir), tmp_path / "cache", batch_size=8)
    (tmp_path / "ddp").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        str(WORKER),
        str(tmp_path / "ddp" / "out.json"),
        str(data_dir),
        str(tmp_path / "cache"),
        "4",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    ddp = json.loads((tmp_path / "ddp" / "out.json").read_text())
    assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-4)
    one = torch.load(tmp_path / "single" / "out.pt", weights_only=True)
    two = torch.load(tmp_path / "ddp" / "out.pt", weights_only=True)
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, atol=1e-4, rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")
