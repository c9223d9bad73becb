"""Task registry: names, declared metadata, local/hub sources and the errors for missing data."""

from __future__ import annotations

import pytest

import bench.tasks.base as task_base
from bench.data import DATA_DIR_ENV
from bench.tasks import get_task, offline_task_names, task_names

GLUE = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
HEADLINES = {
    "cola": "matthews_correlation",
    "stsb": "pearson",
    "squad": "f1",
    "squad_v2": "f1",
    "squad_devsplit": "f1",
    "conll2003": "f1",
    "squad_lm": "f1",
}


def test_every_task_is_registered():
    assert task_names() == [*GLUE, "squad", "squad_v2", "conll2003", "squad_devsplit", "sst2_lm", "squad_lm",
                            "gsm8k_lm"]  # fmt: skip
    for name in task_names():
        task = get_task(name)
        assert task.name == name
        assert task.headline == HEADLINES.get(name, "accuracy")
        assert task.train_split == "train"


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'sst-2'; known tasks: cola, sst2, .*squad_devsplit"):
        get_task("sst-2")
    with pytest.raises(ValueError, match="unknown task"):
        get_task(None)


def test_offline_tasks_in_the_shared_data(data_dir):
    assert offline_task_names(data_dir) == [
        "cola",
        "sst2",
        "mrpc",
        "stsb",
        "rte",
        "wnli",
        "conll2003",
        "squad_devsplit",
        "sst2_lm",
        "squad_lm",
    ]  # not gsm8k_lm: neither metamathqa/train.parquet nor gsm8k/test.parquet is in the shared data
    with pytest.raises(FileNotFoundError, match="not a directory"):
        offline_task_names(data_dir / "missing")


def test_offline_tasks_without_a_folder(data_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    assert "squad_devsplit" in offline_task_names(None) and "mnli" not in offline_task_names(None)
    monkeypatch.delenv(DATA_DIR_ENV)
    assert offline_task_names(None) == task_names()  # the hub has every task


@pytest.mark.parametrize(
    ("name", "split", "relative", "hub"),
    [
        ("mnli", "train", "glue/mnli/train.parquet", "nyu-mll/glue (config 'mnli')"),
        ("mnli", "validation_mismatched", "glue/mnli/validation_mismatched.parquet", "nyu-mll/glue (config 'mnli')"),
        ("qqp", "validation", "glue/qqp/validation.parquet", "nyu-mll/glue (config 'qqp')"),
        ("qnli", "train", "glue/qnli/train.parquet", "nyu-mll/glue (config 'qnli')"),
        ("squad", "train", "squad/train.parquet", "rajpurkar/squad"),
        ("squad_v2", "train", "squad_v2/train.parquet", "rajpurkar/squad_v2"),
    ],
)
def test_missing_split_names_file_and_hub_id(data_dir, name, split, relative, hub):
    with pytest.raises(FileNotFoundError) as error:
        get_task(name).load(split, data_dir)
    message = str(error.value)
    assert str(data_dir / relative) in message and hub in message and repr(split) in message


def test_missing_split_through_environment(data_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    with pytest.raises(FileNotFoundError, match=r"glue/mnli/validation_matched\.parquet"):
        get_task("mnli").load("validation_matched")


def test_no_data_dir_loads_from_the_hub(monkeypatch):
    calls = []
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(task_base, "load_hub", lambda *args: calls.append(args) or "hub dataset")
    assert get_task("mnli").load("validation_mismatched") == "hub dataset"
    assert get_task("conll2003").load("test") == "hub dataset"
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched"), ("eriktks/conll2003", None, "test")]


def test_squad_devsplit_has_only_its_two_splits(data_dir):
    with pytest.raises(ValueError, match="'train' and 'validation' only"):
        get_task("squad_devsplit").load("test", data_dir)


@pytest.mark.parametrize("split", ["", None])
def test_bad_split_argument(split, data_dir):
    with pytest.raises(ValueError, match="split must be a non-empty string"):
        get_task("sst2").load(split, data_dir)


def test_glue_tasks_load_with_their_label_names(data_dir):
    for name in ["cola", "sst2", "mrpc", "rte", "wnli", "qnli"]:
        task = get_task(name)
        dataset = task.load(task.eval_split, data_dir)
        assert tuple(dataset.features["label"].names) == task.label_names
    assert get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")


def test_model_heads_and_kwargs():
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    assert get_task("stsb").model_kwargs() == {"num_labels": 1, "problem_type": "regression"}
    assert get_task("squad_devsplit").model_kwargs() == {"num_labels": 2}
    assert get_task("stsb").kind == "regression" and get_task("stsb").num_labels == 1
    mnli = get_task("mnli").model_kwargs()
    assert mnli["num_labels"] == 3 and mnli["id2label"][2] == "contradiction" and mnli["label2id"]["neutral"] == 1
    conll = get_task("conll2003")
    assert conll.num_labels == 9 and conll.model_kwargs()["id2label"][1] == "B-PER"
    assert get_task("sst2").model_class() is AutoModelForSequenceClassification
    assert conll.model_class() is AutoModelForTokenClassification
    assert get_task("squad_devsplit").model_class() is AutoModelForQuestionAnswering
    assert (get_task("squad").kind, get_task("squad").num_labels, get_task("squad").metric_scale) == ("qa", 2, 1.0)


def test_model_kwargs_build_a_tiny_model():
    from transformers import BertConfig

    for name in ["stsb", "rte", "conll2003", "squad"]:
        task = get_task(name)
        config = BertConfig(
            vocab_size=64,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            **task.model_kwargs(),
        )
        model = task.model_class().from_config(config)
        assert model.config.num_labels == task.num_labels
