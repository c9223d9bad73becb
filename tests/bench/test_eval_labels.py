"""`python -m bench.eval_labels`: the labels of the evaluation subsets that older records score on, rebuilt from real
SST-2 data and checked against the parquet files read directly; fingerprint and row-count mismatches, --check, and
the records that need nothing."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench import eval_labels
from bench import records as rec

from .synthetic import make_record

EVAL_SIZE, SHIFT_SIZE = 20, 15


def _subsets(data_dir) -> dict[str, dict]:
    """The subset descriptions a run records, computed by the project's own code."""
    from bench import shift
    from bench.data import subset
    from bench.tasks import get_task

    task = get_task("sst2")
    _, eval_info = subset(task.load("validation", data_dir), EVAL_SIZE, 0, task="sst2", split="validation")
    mpqa = shift.load(shift.parse_spec("mpqa", "sst2"), task, shift.shift_root(data_dir))
    _, shift_info = subset(mpqa, SHIFT_SIZE, 0, task="sst2", split="shift:mpqa")
    return {"eval": eval_info.to_dict(), "mpqa": shift_info.to_dict()}


def _read_labels(path, size: int) -> list[int]:
    """The labels of the seeded subset, read straight from the parquet file (no `datasets`, no hybridft)."""
    labels = pq.read_table(path, columns=["label"]).column("label").to_pylist()
    rows = np.sort(np.random.default_rng(0).permutation(len(labels))[:size])
    return [int(labels[i]) for i in rows]


def _stats(rng, n: int) -> dict:
    return {"kind": "mean", "rows": rng.integers(0, 2, (n, 1)).tolist()}


def _record(subsets, rng, method="plain", seed=0, *, shared=False, task="sst2", **extra) -> dict:
    """A finished sst2 run scored on the eval subset and on mpqa; ``shared``: both already carry prediction_share."""
    share = {"prediction_share": {"class": 1, "share": 0.6, "label_share": 0.5}} if shared else {}
    mpqa = {"role": "shift", "headline": 0.7, "eval_stats": _stats(rng, SHIFT_SIZE), "subset": subsets["mpqa"], **share}
    fields = {"subsets": {"eval": subsets["eval"]}, "eval_stats": _stats(rng, EVAL_SIZE), "shift_metrics": {"mpqa": mpqa},
              **share, **extra}  # fmt: skip
    record = make_record(task, method, seed, 0.8, **fields)
    record["config"] |= {"shifts": ["mpqa"], "shift_size": SHIFT_SIZE}
    return record


def _folder(tmp_path, records, name="results") -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "runs.jsonl").write_text("".join(rec.dumps(r) + "\n" for r in records))
    return str(folder)


@pytest.fixture(scope="module")
def subsets(data_dir):
    return _subsets(data_dir)


def test_labels_are_those_of_the_subsets_read_independently(tmp_path, data_dir, subsets, seed):
    rng = np.random.default_rng(seed)
    stsb = make_record("stsb", "plain", 0, 0.5, task_kind="regression", eval_stats={"kind": "pearson", "rows": []})
    records = [_record(subsets, rng), _record(subsets, rng, "lora", 1), stsb,
               make_record("sst2", "plain", 2, None, status="failed")]  # fmt: skip
    folder = _folder(tmp_path, records)
    assert eval_labels.main([folder, "--data-dir", str(data_dir)]) == 0
    text = (tmp_path / "results" / eval_labels.LABELS_FILE).read_text()
    assert text.count("\n") == 1 and text.endswith("}\n")  # one line, labels lists included
    found = json.loads(text)
    eval_fp, shift_fp = subsets["eval"]["fingerprint"], subsets["mpqa"]["fingerprint"]
    assert list(found) == sorted([eval_fp, shift_fp])
    assert found[eval_fp] == {"task": "sst2", "split": "validation", "seed": 0, "size": EVAL_SIZE, "num_labels": 2,
                              "labels": _read_labels(data_dir / "glue/sst2/validation.parquet", EVAL_SIZE)}  # fmt: skip
    assert found[shift_fp] == {"task": "sst2", "split": "shift:mpqa", "seed": 0, "size": SHIFT_SIZE, "num_labels": 2,
                               "labels": _read_labels(data_dir / "ood/mpqa/test.parquet", SHIFT_SIZE)}  # fmt: skip
    assert eval_labels.main([folder, "--data-dir", str(data_dir)]) == 0
    assert (tmp_path / "results" / eval_labels.LABELS_FILE).read_text() == text  # the same bytes again


def test_sets_that_carry_prediction_share_are_skipped(tmp_path, data_dir, subsets, seed):
    rng = np.random.default_rng(seed)
    done = _record(subsets, rng, shared=True)
    assert eval_labels.needs_labels(done) == []
    half = _record(subsets, rng, "lora", 1)
    half["prediction_share"] = {"class": 0, "share": 0.5, "label_share": 0.5}  # the eval split has it, mpqa not
    assert [s.name for s in eval_labels.needs_labels(half)] == ["mpqa"]
    folder = _folder(tmp_path, [done])
    assert eval_labels.main([folder, "--data-dir", str(data_dir)]) == 0
    assert not (tmp_path / "results" / eval_labels.LABELS_FILE).exists()  # nothing to label: no file
    assert eval_labels.main([folder, "--check", "--data-dir", str(data_dir)]) == 0


def test_only_classifiers_with_per_example_correctness_need_labels():
    assert eval_labels.is_classifier("sst2") and eval_labels.is_classifier("sst2_lm")
    assert not any(eval_labels.is_classifier(t) for t in ("stsb", "conll2003", "squad_devsplit", "squad_lm"))
    counts = make_record("cola", "plain", 0, 0.3, eval_stats={"kind": "mcc_counts", "rows": [[1, 0, 0, 1]]},
                         subsets={"eval": {"task": "cola", "split": "validation", "seed": 0, "size": 1,
                                           "fingerprint": "0" * 64}})  # fmt: skip
    assert eval_labels.needs_labels(counts) == []


def test_a_fingerprint_mismatch_names_the_folder_record_and_set(tmp_path, data_dir, subsets, seed, capsys):
    record = _record(subsets, np.random.default_rng(seed), "lora", 2)
    record["shift_metrics"]["mpqa"]["subset"] = {**subsets["mpqa"], "fingerprint": "f" * 64}
    folder = _folder(tmp_path, [record])
    assert eval_labels.main([folder, "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: key {record['key']} (method lora, seed 2), set 'mpqa'" in err and "f" * 64 in err
    assert not (tmp_path / "results" / eval_labels.LABELS_FILE).exists()


def test_a_row_count_unlike_the_subset_is_an_error(tmp_path, data_dir, subsets, seed):
    record = _record(subsets, np.random.default_rng(seed))
    record["eval_stats"]["rows"].pop()
    with pytest.raises(
        ValueError, match=rf"set 'eval': {EVAL_SIZE - 1} eval_stats rows but its subset has {EVAL_SIZE}"
    ):
        eval_labels.collect_labels(_folder(tmp_path, [record]), str(data_dir))


def test_check_exit_codes(tmp_path, data_dir, subsets, seed, capsys):
    folder = _folder(tmp_path, [_record(subsets, np.random.default_rng(seed))])
    path = tmp_path / "results" / eval_labels.LABELS_FILE
    check = [folder, "--check", "--data-dir", str(data_dir)]
    assert eval_labels.main(check) == 1 and not path.exists()  # missing: named, nothing written
    assert f"{path} is missing" in capsys.readouterr().err
    assert eval_labels.main([folder, "--data-dir", str(data_dir)]) == 0
    assert eval_labels.main(check) == 0
    changed = json.loads(path.read_text())
    first = changed[min(changed)]["labels"]
    first[0] = 1 - first[0]  # one label flipped
    path.write_text(eval_labels.render(changed))
    assert eval_labels.main(check) == 1 and f"{path} differs" in capsys.readouterr().err
    empty = _folder(tmp_path, [_record(subsets, np.random.default_rng(seed), shared=True)], "done")
    (tmp_path / "done" / eval_labels.LABELS_FILE).write_text("{}\n")  # a file no record needs
    assert eval_labels.main([empty, "--check", "--data-dir", str(data_dir)]) == 1


def test_bad_arguments_are_named(tmp_path, data_dir, capsys):
    assert eval_labels.main([str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert eval_labels.main([str(tmp_path / "empty")]) == 2
    assert "empty: no runs*.jsonl" in capsys.readouterr().err
    folder = _folder(tmp_path, [make_record("sst2", "plain", 0, 0.8)])
    assert eval_labels.main([folder, "--data-dir", str(tmp_path / "no-data")]) == 2
    assert "--data-dir" in (err := capsys.readouterr().err) and "no-data" in err


def test_a_run_scored_on_its_dev_split_gets_the_dev_labels(tmp_path, data_dir, seed):
    """A learning-rate sweep's run: its evaluation subset is drawn from the dev split held out of the train split."""
    from bench.data import subset
    from bench.experiment import split_dev
    from bench.tasks import get_task

    task = get_task("sst2")
    _, dev, dev_info = split_dev(task.load("train", data_dir), 40, 3, task="sst2", split="train")
    rows, info = subset(dev, 12, 0, task="sst2", split="dev")
    record = make_record("sst2", "plain", 3, 0.8, subsets={"dev": dev_info.to_dict(), "eval": info.to_dict()},
                         eval_stats=_stats(np.random.default_rng(seed), 12))  # fmt: skip
    found = eval_labels.collect_labels(_folder(tmp_path, [record]), str(data_dir))
    assert found[info.fingerprint]["split"] == "dev" and found[info.fingerprint]["labels"] == rows["label"]
