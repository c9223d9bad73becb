"""Training a student by hybrid distillation from teachers a method has built and cached itself: the bench's hybrid
methods go through `HybridTrainer` (``prepared=``), so there is one distillation loss path."""

from __future__ import annotations

from hybridft.distill import IndexedCollator, loss_for, rows_for
from hybridft.fitting import fit
from hybridft.trainer import HybridTrainer, Prepared


def fit_distillation(
    student,
    features,
    collator,
    spec,
    *,
    kind: str,
    pre_logits,
    fine_logits,
    loss_kwargs,
    output_dir,
    progress,
    rows=None,
    loss_fn=None,
    **fit_kwargs,
):
    """The distillation stage: train ``student`` on ``features`` (which carry `INDEX_COLUMN`) against cached teacher
    logits with the head kind's rows and loss. ``collator`` is the task's own; ``fit_kwargs`` go to `training.fit`
    (callbacks, args_overrides). ``rows`` / ``loss_fn``: the kind's defaults (`rows_for`, `loss_for`) unless given
    (the causal-LM student passes its teachers' heads, `hybridft.lm_distill`). The hybrid methods, the epoch-ratio
    benchmark and the tests all train through this, and it trains through the public `hybridft.HybridTrainer`, so
    they all measure and check the wiring users get."""
    rows = rows_for(kind) if rows is None else rows
    loss_fn = loss_for(kind) if loss_fn is None else loss_fn
    return fit(
        student,
        features,
        IndexedCollator(rows.collator(collator) if getattr(rows, "extra_columns", ()) else collator),
        spec,
        output_dir=output_dir,
        progress=progress,
        trainer_cls=HybridTrainer,
        prepared=Prepared(pre_logits, fine_logits, rows, loss_fn, loss_kwargs),
        **fit_kwargs,
    )
