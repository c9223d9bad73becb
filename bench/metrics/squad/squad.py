"""SQuAD metric as a local `evaluate` module: the official evaluation scripts' exact match and F1 (0-100).

Default config: SQuAD v1.1 (evaluate-v1.1.py), returning exact_match and f1. Config "squad_v2": SQuAD v2.0
(evaluate-v2.0.py) as the hub's ``squad_v2`` module does it: predictions also carry ``no_answer_probability``,
``no_answer_threshold`` (default 1.0) turns a prediction into "no answer" above it, an unanswerable question's gold is
"", and the result has exact, f1, total, HasAns_*/NoAns_* and best_exact/best_f1 with their thresholds.

Answer normalisation is the official one: lowercase, remove ASCII punctuation (``string.punctuation``), remove the
articles a/an/the as whole words, collapse whitespace (``str.split``, so any unicode whitespace). Each question's
score is the maximum over its gold answers. Predictions are matched to references by id (one each).
Inputs use the hub module's format: predictions ``[{"id", "prediction_text"}]``, references
``[{"id", "answers": {"text": [...], "answer_start": [...]}}]``.
"""

import re
import string
from collections import Counter

import datasets
import evaluate

_DESCRIPTION = "Exact match and F1 of the official SQuAD v1.1 (or, config squad_v2, v2.0) evaluation script."
_CITATION = """@inproceedings{rajpurkar2016squad,
  title={{SQuAD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={EMNLP}, year={2016}}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": list[str], "answer_start": list[int]}}.
    (squad_v2 config) predictions also carry "no_answer_probability": float; compute takes no_answer_threshold.
Returns: {"exact_match": float, "f1": float}, both in 0-100 (squad_v2: exact, f1, HasAns_*, NoAns_*, best_*).
Example:
    >>> squad = evaluate.load("bench/metrics/squad")
    >>> squad.compute(predictions=[{"id": "1", "prediction_text": "the Cat"}],
    ...               references=[{"id": "1", "answers": {"text": ["cat"], "answer_start": [0]}}])
    {'exact_match': 100.0, 'f1': 100.0}
"""

CONFIGS = ("default", "plain_text", "squad", "squad_v2")
_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop articles, collapse whitespace (official SQuAD v1.1 order of steps)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def max_over_golds(score, prediction: str, golds) -> float:
    return max(score(prediction, gold) for gold in golds)


def v2_f1_score(prediction: str, gold: str) -> float:
    """SQuAD v2.0 F1: like v1.1, but an empty prediction against an empty gold (no answer) scores 1."""
    prediction_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    return f1_score(prediction, gold)


def v2_raw_scores(predicted: dict, references) -> tuple[dict, dict, dict]:
    """Per question: exact, F1 (max over non-empty golds, or against "" when there is none) and has-answer."""
    exact, f1, has_answer = {}, {}, {}
    for reference in references:
        golds = [text for text in reference["answers"]["text"] if normalize_answer(text)] or [""]
        qid = reference["id"]
        exact[qid] = max_over_golds(exact_match_score, predicted[qid], golds)
        f1[qid] = max_over_golds(v2_f1_score, predicted[qid], golds)
        has_answer[qid] = bool(reference["answers"]["text"])  # official: any gold, even one normalising to ""
    return exact, f1, has_answer


def v2_best_threshold(predicted: dict, scores: dict, na_probs: dict, has_answer: dict) -> tuple[float, float]:
    """The official find_best_thresh: sweep the no-answer probability threshold over the sorted probabilities."""
    current = best = sum(not has for has in has_answer.values())
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if has_answer[qid]:
            current += scores[qid]
        elif predicted[qid]:
            current -= 1
        if current > best:
            best, best_thresh = current, na_probs[qid]
    return 100.0 * best / len(scores), float(best_thresh)


def v2_evaluate(predicted: dict, na_probs: dict, references, threshold: float) -> dict:
    """The official SQuAD v2.0 evaluation (evaluate-v2.0.py) on already id-matched predictions."""
    exact_raw, f1_raw, has_answer = v2_raw_scores(predicted, references)
    exact = {q: float(not has_answer[q]) if na_probs[q] > threshold else s for q, s in exact_raw.items()}
    f1 = {q: float(not has_answer[q]) if na_probs[q] > threshold else s for q, s in f1_raw.items()}
    result = {
        "exact": 100.0 * sum(exact.values()) / len(exact),
        "f1": 100.0 * sum(f1.values()) / len(f1),
        "total": len(exact),
    }
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, has in has_answer.items() if has == wanted]
        if qids:
            result[f"{prefix}_exact"] = 100.0 * sum(exact[q] for q in qids) / len(qids)
            result[f"{prefix}_f1"] = 100.0 * sum(f1[q] for q in qids) / len(qids)
            result[f"{prefix}_total"] = len(qids)
    result["best_exact"], result["best_exact_thresh"] = v2_best_threshold(predicted, exact_raw, na_probs, has_answer)
    result["best_f1"], result["best_f1_thresh"] = v2_best_threshold(predicted, f1_raw, na_probs, has_answer)
    return result


def _match_ids(predictions, references) -> dict:
    predicted = {p["id"]: p["prediction_text"] for p in predictions}
    if len(predicted) != len(predictions):
        raise ValueError("squad: duplicate ids in predictions")
    unknown = sorted(set(predicted) - {r["id"] for r in references})
    if unknown:
        raise ValueError(f"squad: {len(unknown)} prediction ids are not in the references, e.g. {unknown[0]!r}")
    return predicted


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise KeyError(f"squad config must be one of {list(CONFIGS)}, got {self.config_name!r}")
        prediction = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
        if self.config_name == "squad_v2":
            prediction["no_answer_probability"] = datasets.Value("float64")
        answers = datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")})
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": prediction, "references": {"id": datasets.Value("string"), "answers": answers}}
            ),
            codebase_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references, no_answer_threshold=1.0):
        if not references:
            raise ValueError("squad: references are empty")
        predicted = _match_ids(predictions, references)
        if self.config_name == "squad_v2":
            na_probs = {p["id"]: p["no_answer_probability"] for p in predictions}
            return v2_evaluate(predicted, na_probs, references, no_answer_threshold)
        exact = f1 = 0.0
        for reference in references:
            golds = reference["answers"]["text"]
            if not golds:
                raise ValueError(f"squad: question {reference['id']!r} has no gold answer (SQuAD v1.1 needs one)")
            exact += max_over_golds(exact_match_score, predicted[reference["id"]], golds)
            f1 += max_over_golds(f1_score, predicted[reference["id"]], golds)
        return {"exact_match": 100.0 * exact / len(references), "f1": 100.0 * f1 / len(references)}
