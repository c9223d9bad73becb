"""`python -m bench.gpu_check`: what it imports and how it refuses bad input. The dry run itself (the same code on
the CPU at tiny shapes, ~1.5 min) runs in `.ci/run`, which checks that it writes its CSV and markdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_check

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_imports_only_torch_triton_numpy_and_transformers():
    """Beyond what torch and numpy load themselves, importing the check loads the standard library, this repository
    and nothing else (transformers and triton are imported by the parts that use them)."""
    code = (
        "import sys, json\n"
        "import torch, numpy\n"
        "before = set(sys.modules)\n"
        "import bench.gpu_check\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    added = {name.split(".")[0] for name in json.loads(done.stdout)}
    allowed = set(sys.stdlib_module_names) | {"hybridft", "bench", "torch", "numpy", "triton", "transformers"}
    assert added - allowed == set()
    assert {"hybridft", "bench"} <= added


def test_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "old.csv").write_text("x\n")
    assert gpu_check.main(["--out", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "not an empty folder" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without CUDA")
def test_without_cuda_and_without_dry_run_exits_2(tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    assert "no CUDA device found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_results_flush_each_part_as_it_ends(tmp_path):
    """Rows reach the CSV and the markdown when a part flushes, not only at the end (a cut-off run keeps them)."""
    results = gpu_check.Results(tmp_path, {"device": "test"})
    results.add("correctness", "a", "float32", "torch", "max relative error", 1e-7, ok=True)
    written = results.flush(0)
    lines = (tmp_path / gpu_check.CSV_NAME).read_text().splitlines()
    assert written == 1 and len(lines) == 2 and lines[1].startswith("correctness,a,float32,torch")
    results.add("logits loss", "b", "bfloat16", "eager", "time", "OOM")
    results.flush(written)
    assert len((tmp_path / gpu_check.CSV_NAME).read_text().splitlines()) == 3
    markdown = (tmp_path / gpu_check.MD_NAME).read_text()
    assert "- device: test" in markdown and "| OOM |" in markdown


def test_relative_error_sees_a_misplaced_infinity():
    ref = torch.tensor([1.0, float("inf"), 2.0], dtype=torch.float64)
    assert gpu_check.relative_error(ref.clone(), ref) == 0.0
    assert gpu_check.relative_error(torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64), ref) == float("inf")
    assert gpu_check.relative_error(torch.tensor([1.5, float("inf"), 2.0], dtype=torch.float64), ref) == pytest.approx(
        0.25
    )


def test_strided_inputs_are_views_with_masked_classes():
    s, p, f, labels = gpu_check.inputs(6, 5, torch.float32, "cpu", strided=True, masked=True)
    assert not s.is_contiguous() and not f.is_contiguous() and s.shape == p.shape == f.shape == (6, 5)
    assert torch.isinf(s[:, 4]).all() and torch.isinf(p[:, 4]).all() and torch.isinf(f[:, 4]).all()
    assert ((labels == -100) | ((labels >= 0) & (labels < 4))).all()
