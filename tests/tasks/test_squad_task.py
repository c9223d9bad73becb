"""SQuAD on the real local data: windows with stride, gold round trip through decoding, the devsplit protocol."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from bench.data import subset
from bench.tasks import get_task
from bench.tasks.squad import answer_token_span, clip_questions, devsplit_titles
from bench.tasks.squad_decode import best_span_in_window

MAX_LENGTH, STRIDE = 64, 16


@pytest.fixture(scope="module")
def squad(data_dir):
    task = get_task("squad")
    examples = subset(task.load("validation", data_dir), 150, 3, task="squad", split="validation")[0]
    return task, examples


def _gold_logits(features, length, rng):
    start = rng.normal(size=(len(features), length))
    end = rng.normal(size=(len(features), length))
    for row, (s, e) in enumerate(zip(features["start_positions"], features["end_positions"], strict=True)):
        start[row, s] += 100.0
        end[row, e] += 100.0
    return start, end


def test_gold_positions_round_trip_to_exact_match_100(squad, tokenizer, seed):
    task, examples = squad
    features = task.preprocess(examples, tokenizer, max_length=MAX_LENGTH, stride=STRIDE, train=False)
    windows = Counter(features["example_id"])
    assert len(windows) == len(examples) and max(windows.values()) > 3  # contexts really split
    answer_rows = [i for i, s in enumerate(features["start_positions"]) if s != 0]
    late = [i for i in answer_rows if i > 0 and features[i - 1]["example_id"] == features[i]["example_id"]]
    assert late  # some answers only sit in a later window
    start, end = _gold_logits(features, MAX_LENGTH + 5, np.random.default_rng(seed))  # padded past every row
    scores = task.compute_metrics((start, end), features, examples)
    assert scores == {"exact_match": 100.0, "f1": 100.0}


def test_train_positions_cover_the_answer_or_point_at_cls(squad, tokenizer):
    task, examples = squad
    features = task.preprocess(examples, tokenizer, max_length=MAX_LENGTH, stride=STRIDE, train=True)
    assert features.column_names == [
        "input_ids",
        "token_type_ids",
        "attention_mask",
        "start_positions",
        "end_positions",
    ]
    evaluation = task.preprocess(examples, tokenizer, max_length=MAX_LENGTH, stride=STRIDE, train=False)
    contexts = dict(zip(examples["id"], examples["context"], strict=True))
    answers = dict(zip(examples["id"], examples["answers"], strict=True))
    inside = 0
    for feature, train_feature in zip(evaluation, features, strict=True):
        assert len(feature["input_ids"]) <= MAX_LENGTH
        start, end = train_feature["start_positions"], train_feature["end_positions"]
        offsets = feature["offset_mapping"]
        gold = answers[feature["example_id"]]
        first_char = gold["answer_start"][0]
        last_char = first_char + len(gold["text"][0])
        in_window = [o for o in offsets if o is not None]
        if in_window[0][0] <= first_char and last_char <= in_window[-1][1]:
            text = contexts[feature["example_id"]][offsets[start][0] : offsets[end][1]]
            assert text.strip() == gold["text"][0].strip()
            inside += 1
        else:
            assert start == end == 0 and feature["input_ids"][0] == tokenizer.cls_token_id
    assert inside >= len(examples)


def test_offsets_are_none_outside_the_context(squad, tokenizer):
    task, examples = squad
    features = task.preprocess(examples.select(range(5)), tokenizer, max_length=MAX_LENGTH, stride=STRIDE, train=False)
    for feature in features:
        ids = feature["token_type_ids"]
        for offset, segment, token in zip(feature["offset_mapping"], ids, feature["input_ids"], strict=True):
            assert (offset is None) == (segment == 0 or token == tokenizer.sep_token_id)
    batch = task.collator(tokenizer)([features[i] for i in range(3)])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "start_positions", "end_positions"}


def test_long_questions_are_clipped_so_windows_keep_the_stride(tokenizer):
    question = "  why " + "very " * 80 + "long?"
    clipped = clip_questions([question, "short?"], tokenizer, 10)
    assert clipped[1] == "short?" and clipped[0].startswith("why very")
    assert len(tokenizer(clipped[0], add_special_tokens=False)["input_ids"]) == 10
    task = get_task("squad")
    from datasets import Dataset

    example = Dataset.from_dict(
        {
            "id": ["q"],
            "title": ["t"],
            "context": ["word " * 100],
            "question": [question],
            "answers": [{"text": ["word"], "answer_start": [5]}],
        }
    )
    features = task.preprocess(example, tokenizer, max_length=32, stride=8, train=False)
    assert len(features) > 1 and all(len(ids) <= 32 for ids in features["input_ids"])
    with pytest.raises(ValueError, match="stride must be an int"):
        task.preprocess(example, tokenizer, max_length=32, stride=30, train=True)


def test_decoding_respects_max_answer_length_and_context():
    start = np.array([9.0, 0.0, 3.0, 0.0, 0.0, 0.0])
    end = np.array([9.0, 0.0, 0.0, 2.0, 0.0, 4.0])
    mask = np.array([False, True, True, True, True, True])  # position 0 = CLS / question
    assert best_span_in_window(start, end, mask, n_best=20, max_answer_length=30) == (7.0, 2, 5)
    assert best_span_in_window(start, end, mask, n_best=20, max_answer_length=2) == (5.0, 2, 3)
    assert best_span_in_window(start, end, mask, n_best=20, max_answer_length=1) == (4.0, 5, 5)
    assert best_span_in_window(start, end, mask, n_best=1, max_answer_length=2) is None  # only (2, 5) considered
    end_before_start = np.array([0.0, 5.0, 0.0, 0.0, 0.0, 0.0])
    start_late = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 5.0])
    assert best_span_in_window(start_late, end_before_start, mask, n_best=1, max_answer_length=30) is None
    assert best_span_in_window(start, end, np.zeros(6, bool), n_best=20, max_answer_length=30) is None


def test_compute_metrics_rejects_bad_predictions(squad, tokenizer):
    task, examples = squad
    subset_examples = examples.select(range(3))
    features = task.preprocess(subset_examples, tokenizer, max_length=MAX_LENGTH, stride=STRIDE, train=False)
    with pytest.raises(ValueError, match="start_logits, end_logits"):
        task.compute_metrics(np.zeros((len(features), 64)), features, subset_examples)
    with pytest.raises(ValueError, match="no feature rows"):
        task.compute_metrics(_gold_logits(features, 64, np.random.default_rng(0)), features, examples.select(range(4)))


def test_devsplit_splits_articles_by_sorted_title(data_dir):
    task = get_task("squad_devsplit")
    train, evaluation = task.load("train", data_dir), task.load("validation", data_dir)
    full = get_task("squad").load("validation", data_dir)
    train_titles, eval_titles = set(train["title"]), set(evaluation["title"])
    assert not train_titles & eval_titles and train_titles | eval_titles == set(full["title"])
    ordered = sorted(set(full["title"]))
    assert sorted(eval_titles) == ordered[4::5]
    assert (len(train_titles), len(eval_titles), len(train), len(evaluation)) == (39, 9, 9231, 1339)
    assert len(train) + len(evaluation) == len(full)
    assert devsplit_titles(reversed(ordered)) == (frozenset(train_titles), frozenset(eval_titles))
    assert task.metric_name == "squad" and task.name != "squad"  # tables never mix the two


def test_answer_span_without_answers_points_at_cls():
    assert answer_token_span([(0, 0), (0, 3)], [None, 1], {"text": [], "answer_start": []}, 0) == (0, 0)


def test_squad_v2_gold_round_trip_with_unanswerable_questions(data_dir, tokenizer, seed):
    task = get_task("squad_v2")
    examples = subset(task.load("validation", data_dir), 120, 2, task="squad_v2", split="validation")[0]
    unanswerable = sum(not a["text"] for a in examples["answers"])
    assert 30 < unanswerable < 90
    features = task.preprocess(examples, tokenizer, max_length=MAX_LENGTH, stride=STRIDE, train=False)
    # a gold answer longer than a window fits in none, so every window of that question is labelled CLS
    fits = {qid for qid, start in zip(features["example_id"], features["start_positions"], strict=True) if start}
    assert len(examples) - unanswerable - 3 <= len(fits) < len(examples) - unanswerable
    answers = task.decode(_gold_logits(features, MAX_LENGTH, np.random.default_rng(seed)), features, examples)
    for qid in examples["id"]:
        text, probability = answers[qid]
        assert (text != "") == (qid in fits) and (probability < 0.5) == (qid in fits)
    scores = task.compute_metrics(_gold_logits(features, MAX_LENGTH, np.random.default_rng(seed)), features, examples)
    assert scores["NoAns_total"] == unanswerable and scores["NoAns_exact"] == 100.0
    assert scores["HasAns_exact"] == pytest.approx(100.0 * len(fits) / (len(examples) - unanswerable))
