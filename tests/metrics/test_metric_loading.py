"""bench.metrics.load: names, and loading from a read-only copy of the bench package with an empty modules cache."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import bench
from bench.metrics import METRIC_NAMES, load, module_path


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown metric 'accuracy'; known metrics: glue, squad, seqeval"):
        load("accuracy")


def test_module_scripts_live_in_their_packages():
    for name in METRIC_NAMES:
        path = module_path(name)
        assert path.parent.name == name and (path.parent / "__init__.py").is_file()


def test_loads_from_a_read_only_install_with_a_fresh_cache(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(Path(bench.__file__).parent, site / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    for path in (site / "bench").rglob("*"):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    code = (
        "import bench.metrics as m, sys; assert m.__file__.startswith(sys.argv[1]), m.__file__; "
        "print(m.load('glue', 'mrpc').compute(predictions=[1, 0, 1], references=[1, 1, 1])['f1']); "
        "print(m.load('squad').compute(predictions=[{'id': 'a', 'prediction_text': 'The cat'}], "
        "references=[{'id': 'a', 'answers': {'text': ['cat'], 'answer_start': [0]}}])['exact_match']); "
        "print(m.load('seqeval').compute(predictions=[['B-PER', 'O']], references=[['B-PER', 'O']])['overall_f1'])"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HOME": str(tmp_path / "hf"),
    }
    try:
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", code, str(site)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            check=False,
        )
    finally:  # let pytest clean the copy up
        for path in (site / "bench").rglob("*"):
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0.8", "100.0", "1.0"]
    assert sorted(p.name for p in (tmp_path / "modules" / "evaluate_modules" / "metrics").iterdir() if p.is_dir()) == [
        "glue",
        "seqeval",
        "squad",
    ]
