"""The local squad module: official normalisation cases, and agreement with the official v1.1 script's logic."""

from __future__ import annotations

import random
import re
import string
from collections import Counter

import pytest

from bench.metrics import load


def _official_normalize(s):
    """Verbatim logic of SQuAD's evaluate-v1.1.py normalize_answer (the independent reference)."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _official_f1(prediction, ground_truth):
    prediction_tokens = _official_normalize(prediction).split()
    ground_truth_tokens = _official_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _score(prediction, golds):
    references = [{"id": "q", "answers": {"text": golds, "answer_start": [0] * len(golds)}}]
    return load("squad").compute(predictions=[{"id": "q", "prediction_text": prediction}], references=references)


@pytest.mark.parametrize(
    ("prediction", "gold", "exact", "f1"),
    [
        ("The Eiffel Tower", "eiffel tower", 100.0, 100.0),  # article + case
        ("an apple", "apple", 100.0, 100.0),
        ("theatre", "atre", 0.0, 0.0),  # articles only as whole words
        ("A", "", 100.0, 0.0),  # everything normalises away: EM 1, F1 0 (as the official script)
        ("U.S. Army!", "us army", 100.0, 100.0),  # ASCII punctuation removed
        ("'1,000'", "1000", 100.0, 100.0),
        ("Denver\u00a0Broncos", "Denver Broncos", 100.0, 100.0),  # no-break space
        ("Denver\u2003\u3000Broncos\n", " denver broncos", 100.0, 100.0),  # em space, ideographic space, newline
        ("Saint\u2013Denis", "Saint Denis", 0.0, 0.0),  # en dash is not ASCII punctuation: one token
        ("the big cat", "big dog", 0.0, 50.0),
        ("cat cat dog", "cat dog dog", 0.0, 100 * 2 / 3),  # token multisets
    ],
)
def test_normalisation_cases(prediction, gold, exact, f1):
    assert _score(prediction, [gold]) == pytest.approx({"exact_match": exact, "f1": f1})


def test_max_over_multiple_golds():
    assert _score("Broncos", ["Denver Broncos", "the Broncos", "Broncos team"]) == {"exact_match": 100.0, "f1": 100.0}
    scores = _score("Denver", ["Denver Broncos", "Broncos", "Denver Colorado Broncos"])
    assert scores == pytest.approx({"exact_match": 0.0, "f1": 100 * 2 / 3})


def test_random_predictions_match_the_official_logic(seed):
    rng = random.Random(seed)
    words = ["the", "a", "an", "Cat", "cat", "dog,", "big", "U.S.", "Denver", "broncos", "1,000", "–", "é"]
    predictions, references, exact, f1 = [], [], 0.0, 0.0
    for i in range(300):
        golds = [" ".join(rng.choices(words, k=rng.randint(1, 5))) for _ in range(rng.randint(1, 3))]
        prediction = rng.choice(golds) if rng.random() < 0.2 else " ".join(rng.choices(words, k=rng.randint(0, 6)))
        predictions.append({"id": str(i), "prediction_text": prediction})
        references.append({"id": str(i), "answers": {"text": golds, "answer_start": [0] * len(golds)}})
        exact += max(float(_official_normalize(prediction) == _official_normalize(g)) for g in golds)
        f1 += max(_official_f1(prediction, g) for g in golds)
    rng.shuffle(predictions)  # matched by id, not by position
    scores = load("squad").compute(predictions=predictions, references=references)
    assert scores == pytest.approx({"exact_match": 100 * exact / 300, "f1": 100 * f1 / 300}, abs=1e-9)
    assert 0 < scores["exact_match"] < scores["f1"] < 100


def test_predictions_are_matched_by_id_and_bad_ids_are_refused():
    golds = {"text": ["x"], "answer_start": [0]}
    references = [{"id": "1", "answers": golds}, {"id": "2", "answers": golds}]
    predictions = [{"id": "2", "prediction_text": "y"}, {"id": "1", "prediction_text": "x"}]
    assert load("squad").compute(predictions=predictions, references=references) == {"exact_match": 50.0, "f1": 50.0}
    with pytest.raises(ValueError, match="not in the references"):
        load("squad").compute(predictions=[predictions[1], {"id": "3", "prediction_text": "x"}], references=references)
    with pytest.raises(ValueError, match="duplicate ids"):
        load("squad").compute(predictions=[predictions[1]] * 2, references=references)
    with pytest.raises(ValueError, match="no gold answer"):
        load("squad").compute(
            predictions=[{"id": "1", "prediction_text": "x"}],
            references=[{"id": "1", "answers": {"text": [], "answer_start": []}}],
        )
    with pytest.raises(KeyError, match="squad config must be one of"):
        load("squad", "squad_v3")


def _official_v2(predictions, references, na_probs, threshold):
    """The logic of SQuAD's evaluate-v2.0.py (get_raw_scores, apply_no_ans_threshold, find_best_thresh)."""

    def tokens(s):
        return _official_normalize(s).split() if s else []

    def f1(gold, pred):
        gold_toks, pred_toks = tokens(gold), tokens(pred)
        common = Counter(gold_toks) & Counter(pred_toks)
        num_same = sum(common.values())
        if len(gold_toks) == 0 or len(pred_toks) == 0:
            return int(gold_toks == pred_toks)
        if num_same == 0:
            return 0
        precision, recall = num_same / len(pred_toks), num_same / len(gold_toks)
        return 2 * precision * recall / (precision + recall)

    exact_raw, f1_raw, has_ans = {}, {}, {}
    for qid, texts in references.items():
        golds = [a for a in texts if _official_normalize(a)] or [""]
        has_ans[qid] = bool(texts)
        exact_raw[qid] = max(int(_official_normalize(a) == _official_normalize(predictions[qid])) for a in golds)
        f1_raw[qid] = max(f1(a, predictions[qid]) for a in golds)

    def thresholded(scores):
        return {q: float(not has_ans[q]) if na_probs[q] > threshold else s for q, s in scores.items()}

    def best(scores):
        cur = best_score = sum(1 for q in has_ans if not has_ans[q])
        best_thresh = 0.0
        for qid in sorted(na_probs, key=lambda k: na_probs[k]):
            diff = scores[qid] if has_ans[qid] else (-1 if predictions[qid] else 0)
            cur += diff
            if cur > best_score:
                best_score, best_thresh = cur, na_probs[qid]
        return 100.0 * best_score / len(scores), best_thresh

    exact, f1s = thresholded(exact_raw), thresholded(f1_raw)
    out = {
        "exact": 100.0 * sum(exact.values()) / len(exact),
        "f1": 100.0 * sum(f1s.values()) / len(f1s),
        "total": len(exact),
    }
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        ids = [q for q in has_ans if has_ans[q] == wanted]
        out[f"{prefix}_exact"] = 100.0 * sum(exact[q] for q in ids) / len(ids)
        out[f"{prefix}_f1"] = 100.0 * sum(f1s[q] for q in ids) / len(ids)
        out[f"{prefix}_total"] = len(ids)
    out["best_exact"], out["best_exact_thresh"] = best(exact_raw)
    out["best_f1"], out["best_f1_thresh"] = best(f1_raw)
    return out


@pytest.mark.parametrize("threshold", [1.0, 0.5])
def test_squad_v2_matches_the_official_v2_logic(seed, threshold):
    rng = random.Random(seed)
    words = ["the", "Cat", "cat", "dog,", "big", "U.S.", "Denver", "broncos"]
    predictions, references, texts, golds, na_probs = [], [], {}, {}, {}
    for i in range(300):
        qid = f"q{i}"
        answerable = rng.random() < 0.5
        gold = (
            [" ".join(rng.choices(words, k=rng.randint(1, 4))) for _ in range(rng.randint(1, 3))] if answerable else []
        )
        text = "" if rng.random() < 0.4 else (rng.choice(gold) if gold and rng.random() < 0.3 else rng.choice(words))
        texts[qid], golds[qid], na_probs[qid] = text, gold, rng.random()
        predictions.append({"id": qid, "prediction_text": text, "no_answer_probability": na_probs[qid]})
        references.append({"id": qid, "answers": {"text": gold, "answer_start": [0] * len(gold)}})
    scores = load("squad", "squad_v2").compute(
        predictions=predictions, references=references, no_answer_threshold=threshold
    )
    assert scores == pytest.approx(_official_v2(texts, golds, na_probs, threshold), abs=1e-9)
    assert 0 < scores["HasAns_f1"] < 100 and 0 < scores["NoAns_exact"] < 100
