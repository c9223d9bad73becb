"""``teacher_scores`` of a bench run: each teacher scored with the task's own metrics on the run's dev split (if
any) and its evaluation split; the fields and the weak-teacher rule are `hybridft.teacher_quality`'s."""

from __future__ import annotations

from typing import Any

from bench.evaluation import score
from bench.scoring import majority_baseline
from hybridft.distill import weights_hash

# Teacher scores already computed in this process, by the teacher's weights and the scored subsets: the methods of
# one seed share their teachers (hybrid, kd_*, wise_ft, lp_ft, ... at equal settings), so each is scored once.
_SCORED: dict[tuple, dict[str, Any]] = {}
_SCORED_MAX = 64


def bench_teacher_scores(teachers, data, cfg, work_dir, progress: bool) -> dict[str, Any]:
    """``teacher_scores`` of a bench run (`hybridft.teachers.Teachers`, `bench.experiment.PreparedData`): each
    teacher scored with the task's metrics on the dev split (if any) and the evaluation split."""
    task = data.task
    headline = task.headline
    majority_eval = majority_baseline(task, data.eval_features, data.eval_examples)
    majority_dev = None if data.dev is None else majority_baseline(task, data.dev.features, data.dev.examples)
    subsets = (task.name, data.subsets["eval"]["fingerprint"], (data.subsets.get("dev") or {}).get("fingerprint"),
               cfg.max_length)  # fmt: skip

    def one(model, probe: dict | None) -> dict[str, Any]:
        key = (weights_hash(model), *subsets, None if probe is None else probe.get("selection"))
        if key not in _SCORED:
            if len(_SCORED) >= _SCORED_MAX:
                _SCORED.pop(next(iter(_SCORED)))
            _SCORED[key] = scored(model, probe)
        return dict(_SCORED[key])

    def scored(model, probe: dict | None) -> dict[str, Any]:
        evaluated = score(model, task, data.tokenizer, data.eval_features, data.eval_examples, cfg, work_dir, progress)
        entry = {"eval": float(evaluated.get(headline, float("nan"))), "majority_eval": majority_eval}
        if data.dev is not None:
            on_dev = score(model, task, data.tokenizer, data.dev.features, data.dev.examples, cfg, work_dir, progress)
            entry |= {"dev": float(on_dev.get(headline, float("nan"))), "majority": majority_dev, "dev_source": "dev"}
        elif probe is not None:
            entry |= {"dev": probe["held_out_score"], "majority": probe.get("majority"),
                      "dev_source": probe["selection"]}  # fmt: skip
        else:
            entry |= {"dev": None, "majority": None, "dev_source": None}
        return entry

    scores = {"pre": one(teachers.pre, teachers.probe), "fine": None}
    if teachers.fine is not None:
        scores["fine"] = one(teachers.fine, None)
    for model in (teachers.pre, teachers.fine):
        if model is not None:
            model.to("cpu")
    return scores


__all__ = ["bench_teacher_scores"]
