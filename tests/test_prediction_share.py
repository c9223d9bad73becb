"""prediction_share: a classifier's most-predicted class and its share of the predictions and of the labels, against
a Counter over the argmaxes; None for the tasks that are not classifiers; carried by a run's record."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.scoring import prediction_share, top_class_share
from bench.tasks import get_task


def _reference(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Plain counting: the class predicted most often (ties: the lowest index) and both shares."""
    predicted = Counter(int(np.argmax(row)) for row in logits)
    top = min(range(num_classes), key=lambda c: (-predicted[c], c))
    n = len(labels)
    return {"class": top, "share": round(predicted[top] / n, 6),
            "label_share": round(sum(int(y) == top for y in labels) / n, 6)}  # fmt: skip


def _classifier(num_labels: int):
    return SimpleNamespace(kind="classification", num_labels=num_labels)


@pytest.mark.parametrize(("num_classes", "n"), [(2, 97), (3, 41), (5, 401)])
def test_matches_a_count_of_the_argmaxes(num_classes, n, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, num_classes)) + rng.normal(size=num_classes)  # unequal class shares
    labels = rng.integers(0, num_classes, n)
    share = prediction_share(_classifier(num_classes), logits.astype(np.float32), {"labels": labels.tolist()})
    assert share == _reference(logits.astype(np.float32), labels, num_classes)
    assert isinstance(share["share"], float) and isinstance(share["label_share"], float)


@pytest.mark.parametrize("num_classes", [2, 3, 4])
def test_a_tie_goes_to_the_lowest_class(num_classes, seed):
    rng = np.random.default_rng(seed)
    tied = sorted(rng.choice(num_classes, size=2, replace=False).tolist())
    per_class = 7
    predicted = np.array([c for c in tied for _ in range(per_class)] +
                         [c for c in range(num_classes) if c not in tied for _ in range(per_class - 3)])  # fmt: skip
    predicted = rng.permutation(predicted)
    logits = rng.normal(size=(len(predicted), num_classes))
    logits[np.arange(len(predicted)), predicted] += 20.0  # this class is the argmax of its row
    labels = rng.integers(0, num_classes, len(predicted))
    share = prediction_share(_classifier(num_classes), torch.tensor(logits), {"labels": labels})
    assert share == _reference(logits, labels, num_classes) and share["class"] == tied[0]
    assert share["share"] == round(per_class / len(predicted), 6)


def test_a_class_never_predicted_still_counts_among_the_labels(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(30, 3))
    logits[:, 2] = -50.0  # class 2 is never the argmax
    labels = np.full(30, 2)
    share = prediction_share(_classifier(3), (logits,), {"labels": labels})  # a tuple of one array, as predict gives
    assert share == _reference(logits, labels, 3) and share["label_share"] == 0.0


def test_a_choice_task_counts_over_the_width_of_its_scores(seed):
    rng = np.random.default_rng(seed)
    scores = np.log(rng.dirichlet(np.ones(3), size=50))  # label-word log-likelihoods
    labels = rng.integers(0, 3, 50)
    fake = SimpleNamespace(kind="causal_lm", output="choice", num_labels=0)  # num_labels not read: the width is
    assert prediction_share(fake, scores, {"labels": labels}) == _reference(scores, labels, 3)
    sst2_lm = get_task("sst2_lm")
    binary = scores[:, :2]
    assert prediction_share(sst2_lm, binary, {"labels": labels % 2}) == _reference(binary, labels % 2, 2)


@pytest.mark.parametrize("task", ["stsb", "conll2003", "squad_devsplit", "squad_lm", "gsm8k_lm"])
def test_none_for_tasks_that_are_not_classifiers(task, seed):
    rng = np.random.default_rng(seed)
    outputs = rng.normal(size=(8, 1)) if task == "stsb" else rng.normal(size=(8, 5, 9))
    assert prediction_share(get_task(task), outputs, {"labels": rng.integers(0, 2, 8)}) is None


def test_no_rows_is_none_and_a_length_mismatch_is_named():
    assert top_class_share(np.zeros(0, dtype=int), [], 2) is None
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        top_class_share([0, 1, 1], [0, 1], 2)


@pytest.mark.slow
def test_a_run_record_carries_it_for_the_eval_split_and_each_shift_set(tmp_path, data_dir):
    """One tiny run (tiny-bert, real SST-2 and one shift set): each share is what the recorded correctness and the
    subset's own labels give (binary: the prediction is the label when correct, the other class when not)."""
    from bench import experiment
    from bench.data import subset
    from bench.shift import load, parse_spec, shift_root

    cfg = experiment.RunConfig(task="sst2", method="plain", seed=1, model="tiny-bert", train_size=24, eval_size=16,
                               max_length=32, epochs=1.0, batch_size=8, shifts=["mpqa"], shift_size=20,
                               data_dir=str(data_dir))  # fmt: skip
    result = experiment.run_experiment(cfg, work_dir=tmp_path / "w", cache_dir=tmp_path / "c", progress=False)
    task = get_task("sst2")
    raws = {"eval": task.load(task.eval_split, data_dir), "mpqa": load(parse_spec("mpqa", "sst2"), task,
                                                                       shift_root(data_dir))}  # fmt: skip
    entries = {"eval": result, "mpqa": result["shift_metrics"]["mpqa"]}
    for name, entry in entries.items():
        rows, info = subset(raws[name], len(entry["eval_stats"]["rows"]), 0, task="sst2", split=name)
        labels = np.asarray(rows["label"])
        correct = np.asarray(entry["eval_stats"]["rows"])[:, 0] == 1
        predicted = np.where(correct, labels, 1 - labels)
        assert entry["prediction_share"] == top_class_share(predicted, labels, 2), name
        share = entry["prediction_share"]  # and the flag the tables read, by the rule written out
        excess = (share["share"] - share["label_share"]) / (1 - share["label_share"])
        assert entry["collapsed"] is bool(excess > 0.85), name
    assert info.fingerprint == entries["mpqa"]["subset"]["fingerprint"]
