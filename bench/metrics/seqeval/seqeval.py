"""Entity-level sequence labelling metric (seqeval) as a local `evaluate` module, in the hub module's format.

Default mode (``mode=None``) is seqeval's conlleval-compatible scoring: an entity is a maximal chunk of one type
started by B-X, or by an I-X that does not continue a chunk of type X (conlleval's reading of ill-formed
predictions), and it counts only on an exact span and type match with a gold entity. That is how the CoNLL-2003
shared task scored systems, so published F1 numbers are comparable. ``mode="strict", scheme="IOB2"`` gives
seqeval's strict mode instead (ill-formed chunks are not entities). On well-formed IOB2 both agree.

Returns per entity type {"precision", "recall", "f1", "number"} and overall_precision / overall_recall /
overall_f1 / overall_accuracy (token accuracy), all in 0-1. One deliberate difference from the hub module:
``zero_division`` defaults to 0 (the value sklearn/seqeval substitute anyway) instead of "warn".
"""

import importlib

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report

_DESCRIPTION = "Entity-level precision, recall and F1 of sequence labelling (seqeval; conlleval semantics)."
_CITATION = """@misc{seqeval, title={{seqeval}: A Python framework for sequence labeling evaluation},
  author={Hiroki Nakayama}, year={2018}, url={https://github.com/chakki-works/seqeval}}
@inproceedings{tjong2003introduction, title={Introduction to the {CoNLL}-2003 Shared Task: Language-Independent
  Named Entity Recognition}, author={Tjong Kim Sang, Erik F. and De Meulder, Fien}, booktitle={CoNLL}, year={2003}}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted tag lists, e.g. [["B-PER", "I-PER", "O"]].
    references: list of gold tag lists (same lengths).
    suffix: tags carry the type first (PER-B) when True.
    scheme: None, or one of IOB1, IOB2, IOE1, IOE2, IOBES, BILOU (used by mode="strict").
    mode: None (conlleval-compatible) or "strict".
    sample_weight: optional per-sample weights.
    zero_division: value for an undefined precision/recall (0, 1 or "warn"); default 0.
Returns: per-type dicts and overall_precision, overall_recall, overall_f1, overall_accuracy.
"""

SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")


def _scheme(name):
    if name is None:
        return None
    if name not in SCHEMES:
        raise ValueError(f"seqeval: scheme must be one of {list(SCHEMES)} or None, got {name!r}")
    return getattr(importlib.import_module("seqeval.scheme"), name)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Seqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                    "references": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                }
            ),
            codebase_urls=["https://github.com/chakki-works/seqeval"],
            reference_urls=["https://www.clips.uantwerpen.be/conll2003/ner/"],
        )

    def _compute(
        self, predictions, references, suffix=False, scheme=None, mode=None, sample_weight=None, zero_division=0
    ):
        if mode not in (None, "strict"):
            raise ValueError(f"seqeval: mode must be None (conlleval) or 'strict', got {mode!r}")
        for i, (predicted, gold) in enumerate(zip(predictions, references, strict=True)):
            if len(predicted) != len(gold):
                raise ValueError(f"seqeval: sequence {i} has {len(predicted)} predicted tags but {len(gold)} gold tags")
        report = classification_report(
            y_true=references,
            y_pred=predictions,
            suffix=suffix,
            output_dict=True,
            scheme=_scheme(scheme),
            mode=mode,
            sample_weight=sample_weight,
            zero_division=zero_division,
        )
        overall = report.pop("micro avg")
        report.pop("macro avg")
        report.pop("weighted avg")
        scores = {
            entity: {
                "precision": float(s["precision"]),
                "recall": float(s["recall"]),
                "f1": float(s["f1-score"]),
                "number": int(s["support"]),
            }
            for entity, s in report.items()
        }
        scores["overall_precision"] = float(overall["precision"])
        scores["overall_recall"] = float(overall["recall"])
        scores["overall_f1"] = float(overall["f1-score"])
        scores["overall_accuracy"] = float(accuracy_score(y_true=references, y_pred=predictions))
        return scores
