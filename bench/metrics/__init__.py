"""The official metrics as local `evaluate` modules shipped inside the package (the hub modules need network).

    from bench.metrics import load
    load("glue", "cola").compute(predictions=[...], references=[...])
    load("squad").compute(predictions=[{"id", "prediction_text"}], references=[{"id", "answers"}])
    load("squad", "squad_v2").compute(predictions=[{"id", "prediction_text", "no_answer_probability"}], ...)
    load("seqeval").compute(predictions=[["B-PER", ...]], references=[[...]])

Each module is a plain script, ``bench/metrics/<name>/<name>.py``; ``evaluate.load`` copies it into its modules
cache (HF_MODULES_CACHE) and imports it from there, which works from a source tree and from an installed wheel.
"""

from __future__ import annotations

from pathlib import Path

import evaluate

__all__ = ["METRIC_NAMES", "load", "module_path"]

METRIC_NAMES = ("glue", "squad", "seqeval")
_HERE = Path(__file__).resolve().parent


def module_path(name: str) -> Path:
    """The local module script of metric ``name``."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}")
    path = _HERE / name / f"{name}.py"
    if not path.is_file():  # pragma: no cover - a broken installation
        raise FileNotFoundError(f"metric module {path} is missing from the installed package")
    return path


def load(name: str, config_name: str | None = None):
    """The local evaluate module ``name``: glue needs ``config_name`` = the GLUE task, as on the hub; squad takes
    None (v1.1) or "squad_v2" (the hub's squad_v2 module); seqeval takes none."""
    path = module_path(name)
    if name == "glue" and config_name is None:
        raise ValueError("metric 'glue' needs config_name: the GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, ...)")
    if name == "seqeval" and config_name not in (None, "default"):
        raise ValueError(f"metric 'seqeval' takes no config_name, got {config_name!r}")

    # keep_in_memory: predictions are not written to an arrow cache file (nothing to collide on between parallel runs)
    return evaluate.load(str(path), config_name, keep_in_memory=True)
