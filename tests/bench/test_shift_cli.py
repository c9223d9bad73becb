"""`python -m bench --shift TASK:NAME=PATH`: a file from a temporary folder becomes a shift set of the task's runs,
is part of their identity, and bad values are named."""

from __future__ import annotations

import random

import pytest

from bench import __main__ as cli
from bench import records as rec


def _bench(*args: str) -> int:
    return cli.main(["--no-progress", "--no-tables", *args])


def _write_rte_like(path, seed: int, n: int = 26):
    from datasets import ClassLabel, Dataset, Features, Value

    rng = random.Random(seed)
    words = ["a", "man", "is", "not", "playing", "the", "guitar", "dog", "runs"]
    rows = {"sentence1": [" ".join(rng.choices(words, k=rng.randint(3, 10))) for _ in range(n)],
            "sentence2": [" ".join(rng.choices(words, k=rng.randint(2, 6))) for _ in range(n)],
            "label": [rng.randint(0, 1) for _ in range(n)], "note": ["x"] * n}  # fmt: skip
    features = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                         "label": ClassLabel(names=["entailment", "not_entailment"]), "note": Value("string")})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(rows, features=features).to_parquet(str(path))


@pytest.mark.slow
def test_cli_shift_flag_adds_a_set_to_the_record_and_the_run_identity(tmp_path, data_dir, seed, capsys):
    own = tmp_path / "sets" / "mine" / "test.parquet"
    _write_rte_like(own, seed)
    out = tmp_path / "out"
    args = ["--profile", "smoke", "--tasks", "rte", "--methods", "plain", "--seeds", "0", "--data-dir", str(data_dir),
            "--output", str(out)]  # fmt: skip
    assert _bench(*args, "--shift", f"rte:mine={own}") == 0
    (record,) = rec.read_file(out / "runs.jsonl")
    assert record["status"] == "ok"
    assert sorted(record["shift_metrics"]) == ["mine", "sick_rte"]  # the registered set and the added file
    mine = record["shift_metrics"]["mine"]
    assert mine["headline_metric"] == "accuracy" and 0.0 <= mine["headline"] <= 1.0
    assert mine["subset"]["size"] == 26 and mine["subset"]["split"] == "shift:mine"  # smoke: 32 rows at most
    assert record["config"]["shifts"] == ["sick_rte", f"mine={own}"]
    capsys.readouterr()
    assert _bench(*args, "--shift", f"rte:mine={own}", "--list") == 0
    listing = capsys.readouterr().out
    assert " ok " in listing and "+shift sick_rte,mine" in listing
    assert _bench(*args, "--list") == 0  # without the file the run is another run: pending, it would run again
    listing = capsys.readouterr().out
    assert "1 pending" in listing and "runs again" in listing


def test_cli_shift_flag_errors_name_the_problem(tmp_path, capsys):
    base = ["--profile", "smoke", "--output", str(tmp_path), "--list"]
    with pytest.raises(SystemExit, match="--shift: --shift must look like TASK:NAME=PATH"):
        _bench(*base, "--shift", "rte=/x.parquet")
    with pytest.raises(SystemExit, match="unknown task 'rtee'"):
        _bench(*base, "--shift", "rtee:mine=/x.parquet")
    with pytest.raises(SystemExit, match="registered set's name"):
        _bench(*base, "--shift", "rte:sick_rte=/x.parquet")


@pytest.mark.slow
def test_cli_shift_with_a_schema_mismatch_fails_the_run_naming_file_and_column(tmp_path, data_dir):
    from datasets import Dataset

    bad = tmp_path / "bad.parquet"
    Dataset.from_dict({"premise": ["a b"], "sentence2": ["c"], "label": [0]}).to_parquet(str(bad))
    out = tmp_path / "out"
    assert _bench("--profile", "smoke", "--tasks", "rte", "--methods", "plain", "--seeds", "0", "--data-dir",
                  str(data_dir), "--output", str(out), "--shift", f"rte:bad={bad}") == 0  # fmt: skip
    (record,) = rec.read_file(out / "runs.jsonl")
    assert record["status"] == "failed"
    message = record["error"]["message"]
    assert (
        str(bad) in message
        and "'sentence1'" in message
        and "columns found: ['premise', 'sentence2', 'label']" in message
    )
