"""The local seqeval module against seqeval called directly, in conlleval (default) and strict IOB2 mode."""

from __future__ import annotations

import random

import pytest
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from bench.metrics import load

TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def _valid_iob2(rng, length):
    tags, previous = [], "O"
    for _ in range(length):
        tag = rng.choice(TAGS)
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        tags.append(tag)
        previous = tag
    return tags


def _random_pair(seed):
    rng = random.Random(seed)
    references = [_valid_iob2(rng, rng.randint(1, 25)) for _ in range(200)]
    predictions = [[t if rng.random() < 0.6 else rng.choice(TAGS) for t in sentence] for sentence in references]
    return predictions, references


def test_default_mode_matches_seqeval_conlleval(seed):
    predictions, references = _random_pair(seed)
    scores = load("seqeval").compute(predictions=predictions, references=references)
    assert scores["overall_precision"] == pytest.approx(precision_score(references, predictions), abs=1e-12)
    assert scores["overall_recall"] == pytest.approx(recall_score(references, predictions), abs=1e-12)
    assert scores["overall_f1"] == pytest.approx(f1_score(references, predictions), abs=1e-12)
    assert scores["overall_accuracy"] == pytest.approx(accuracy_score(references, predictions), abs=1e-12)
    report = classification_report(references, predictions, output_dict=True)
    for entity in ("PER", "ORG", "LOC", "MISC"):
        assert scores[entity] == pytest.approx(
            {
                "precision": report[entity]["precision"],
                "recall": report[entity]["recall"],
                "f1": report[entity]["f1-score"],
                "number": report[entity]["support"],
            }
        )
    assert 0.2 < scores["overall_f1"] < 0.9


def test_strict_mode_matches_seqeval_strict(seed):
    predictions, references = _random_pair(seed)
    scores = load("seqeval").compute(predictions=predictions, references=references, mode="strict", scheme="IOB2")
    expected = f1_score(references, predictions, mode="strict", scheme=IOB2)
    assert scores["overall_f1"] == pytest.approx(expected, abs=1e-12)
    default = load("seqeval").compute(predictions=predictions, references=references)
    assert scores["overall_f1"] != default["overall_f1"]  # random predictions hold ill-formed I- chunks


def test_conlleval_reads_a_stray_i_tag_as_an_entity():
    references = [["O", "B-PER", "I-PER", "O"]]
    predictions = [["O", "I-PER", "I-PER", "O"]]
    assert load("seqeval").compute(predictions=predictions, references=references)["overall_f1"] == 1.0
    strict = load("seqeval").compute(predictions=predictions, references=references, mode="strict", scheme="IOB2")
    assert strict["overall_f1"] == 0.0


def test_spans_must_match_exactly():
    references = [["B-ORG", "I-ORG", "O", "B-LOC"]]
    predictions = [["B-ORG", "O", "O", "B-LOC"]]
    scores = load("seqeval").compute(predictions=predictions, references=references)
    assert (scores["overall_precision"], scores["overall_recall"]) == (0.5, 0.5)
    assert scores["ORG"]["f1"] == 0.0 and scores["LOC"]["f1"] == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="sequence 0 has 2 predicted tags but 1 gold tags"):
        load("seqeval").compute(predictions=[["O", "O"]], references=[["O"]])
    with pytest.raises(ValueError, match="mode must be None"):
        load("seqeval").compute(predictions=[["O"]], references=[["O"]], mode="lenient")
    with pytest.raises(ValueError, match="scheme must be one of"):
        load("seqeval").compute(predictions=[["O"]], references=[["O"]], mode="strict", scheme="IOB3")
