"""SQuAD v1.1 metric as a local `evaluate` module: the official evaluation script's exact match and F1 (0-100).

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

_DESCRIPTION = "Exact match and F1 of the official SQuAD v1.1 evaluation script."
_CITATION = """@inproceedings{rajpurkar2016squad,
  title={{SQuAD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={EMNLP}, year={2016}}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": list[str], "answer_start": list[int]}}.
Returns: {"exact_match": float, "f1": float}, both in 0-100.
Example:
    >>> squad = evaluate.load("hybridft/metrics/squad")
    >>> squad.compute(predictions=[{"id": "1", "prediction_text": "the Cat"}],
    ...               references=[{"id": "1", "answers": {"text": ["cat"], "answer_start": [0]}}])
    {'exact_match': 100.0, 'f1': 100.0}
"""

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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
            codebase_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references):
        predicted = {p["id"]: p["prediction_text"] for p in predictions}
        if len(predicted) != len(predictions):
            raise ValueError("squad: duplicate ids in predictions")
        unknown = sorted(set(predicted) - {r["id"] for r in references})
        if unknown:
            raise ValueError(f"squad: {len(unknown)} prediction ids are not in the references, e.g. {unknown[0]!r}")
        exact = f1 = 0.0
        for reference in references:
            golds = reference["answers"]["text"]
            if not golds:
                raise ValueError(f"squad: question {reference['id']!r} has no gold answer (SQuAD v1.1 needs one)")
            exact += max_over_golds(exact_match_score, predicted[reference["id"]], golds)
            f1 += max_over_golds(f1_score, predicted[reference["id"]], golds)
        return {"exact_match": 100.0 * exact / len(references), "f1": 100.0 * f1 / len(references)}
