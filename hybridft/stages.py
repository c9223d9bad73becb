"""The teacher stages of the hybrid method, cached on disk by the hash of their stage config.

1. LP teacher θ_pre: the pretrained encoder frozen, the task head trained (linear probing, Kumar et al. 2022).
2. LP-FT teacher θ_fine: every weight fine-tuned, starting from θ_pre.

Concurrent workers (a cluster's jobs sharing one cache) do not train a stage twice: the first claims it
(`hybridft.claims`) and the others wait for its artifact. A stage's key is the sha256 of its canonical config: model
spec, task, seed, training data (subset fingerprint and preprocessing), batch size, its optimisation settings, and
the key of the stage it starts from. Methods that share a stage (lp, lp_ft, wise_ft, hybrid, kd_*, hybrid_output at
equal settings) and reruns load it instead of training it again. Artifacts are written to a temporary folder that is
renamed into place when complete, so an interrupted run never leaves a half-written artifact. Under torchrun every
rank trains, and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from hybridft.methods.base import FULL_FT_LR, FULL_FT_WARMUP, FULL_FT_WEIGHT_DECAY, TrainContext
from hybridft.training import FitResult, fit

# Linear probing with Adam: a larger step than fine-tuning since only a freshly initialised head moves (LP-FT's
# own probe is a logistic regression solved to convergence; with SGD-style training 1e-3 is the usual choice).
LP_LR = 1e-3

STAGE_FORMAT = 2  # bump when the artifact layout or the recorded cost changes (2: tokens, steps, FLOPs, curve)


@dataclass(frozen=True)
class StageFields:
    """Settings of the LP and LP-FT teacher stages, shared by every method built on them.

    ``lp_epochs`` / ``ft_epochs`` None → the run's ``epochs``.
    """

    lp_learning_rate: float = LP_LR
    lp_epochs: float | None = None
    lp_weight_decay: float = 0.0
    ft_learning_rate: float = FULL_FT_LR
    ft_epochs: float | None = None
    ft_weight_decay: float = FULL_FT_WEIGHT_DECAY
    ft_warmup_ratio: float = FULL_FT_WARMUP

    def validate_stages(self) -> None:
        check_stage_fields(self)


def check_stage_fields(settings) -> None:
    """ValueError naming the teacher-stage field of ``settings`` (`StageFields` or `HybridTrainingArguments`) that
    is out of range."""
    owner = type(settings).__name__
    for name in ("lp_learning_rate", "ft_learning_rate"):
        if not getattr(settings, name) > 0:
            raise ValueError(f"{owner}.{name} must be > 0, got {getattr(settings, name)}")
    for name in ("lp_epochs", "ft_epochs"):
        value = getattr(settings, name)
        if value is not None and not value > 0:
            raise ValueError(f"{owner}.{name} must be None (the training epochs) or > 0, got {value}")
    for name in ("lp_weight_decay", "ft_weight_decay"):
        if getattr(settings, name) < 0:
            raise ValueError(f"{owner}.{name} must be >= 0, got {getattr(settings, name)}")
    if not 0.0 <= settings.ft_warmup_ratio < 1.0:
        raise ValueError(f"{owner}.ft_warmup_ratio must be in [0, 1), got {settings.ft_warmup_ratio}")


@dataclass
class Teachers:
    """θ_pre and θ_fine (frozen copies are up to the caller) and the cost of the stages that made them."""

    pre: torch.nn.Module
    fine: torch.nn.Module
    fits: list[FitResult]


def stable_hash(data: dict) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def atomic_dir(target: Path):
    """Yield a temporary folder next to ``target``; rename it to ``target`` on success, delete it on failure.

    If another process completed ``target`` first, ours is discarded (both hold the same artifact).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _save(model: torch.nn.Module, result: FitResult, key_data: dict, target: Path) -> None:
    from safetensors.torch import save_model

    with atomic_dir(target) as tmp:
        save_model(model, str(tmp / "model.safetensors"))  # tied weights (an LM's head) are stored once
        meta = {"config": key_data, "fit": result.to_dict()}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=repr))


def _load(build_fn, path: Path) -> tuple[torch.nn.Module, FitResult]:
    from safetensors.torch import load_model

    meta = json.loads((path / "meta.json").read_text())
    model = build_fn()
    load_model(model, str(path / "model.safetensors"), strict=True)
    return model, FitResult(**meta["fit"])


def stored_stage(cache_dir: Path, stage: str, key_data: dict, train_fn, build_fn):
    """Load stage ``stage`` with config ``key_data`` from ``cache_dir/stages`` into ``build_fn()`` (a model of the
    same architecture), or run ``train_fn() -> (model, FitResult)`` and store it. Returns (model, FitResult, key)."""
    from hybridft.claims import claimed

    key = stable_hash({"format": STAGE_FORMAT, **key_data})
    path = Path(cache_dir) / "stages" / f"{stage}-{key}"
    with claimed(path, (path / "meta.json").is_file) as mine:  # concurrent workers: one trains, the others wait
        if not mine:
            return (*_load(build_fn, path), key)
        model, result = train_fn()
        if _rank() == 0:
            _save(model, result, key_data, path)
    return model, result, key


def cached_stage(ctx: TrainContext, stage: str, key_data: dict, train_fn) -> tuple[torch.nn.Module, FitResult, str]:
    """Load stage ``stage`` with config ``key_data`` from ``ctx.cache_dir``, or run ``train_fn()`` and store it."""
    return stored_stage(ctx.cache_dir, stage, key_data, train_fn, ctx.build_model)


def _base_key(ctx: TrainContext) -> dict:
    run = ctx.run
    return {
        "model": run.model,
        "task": ctx.task.name,
        "seed": run.seed,
        "data": ctx.data_key,
        "batch_size": run.batch_size,
    }


@contextlib.contextmanager
def frozen_encoder_in_eval_mode(model: torch.nn.Module):
    """Keep the encoder (``model.base_model``) in eval mode while the Trainer puts the model in train mode.

    A linear probe trains the head on the frozen encoder's features; with the encoder in train mode its dropout
    would noise those features (and the probe would fit noisy features it never sees at inference). Only the
    head's own dropout stays active. `Trainer.training_step` calls ``model.train()`` every step, so the encoder's
    ``train`` is pinned to eval for the duration of the block and restored afterwards.
    """
    import types

    encoder = model.base_model
    encoder.train = types.MethodType(lambda self, mode=True: torch.nn.Module.train(self, False), encoder)
    encoder.eval()
    try:
        yield
    finally:
        del encoder.train
        model.train(model.training)


def linear_probe(ctx: TrainContext, learning_rate: float, epochs: float | None, weight_decay: float):
    """Stage 1: θ_pre, the head trained on the frozen encoder. Returns (model, FitResult, stage key)."""
    if ctx.task.kind == "causal_lm":
        raise ValueError(
            f"task {ctx.task.name!r} is a causal LM: its pretrained head already speaks, so there is no linear-probe "
            "stage (lp and lp_ft do not apply; hybrid, kd_pre, kd_fine and wise_ft use the pretrained LM as θ_pre)"
        )

    spec = ctx.spec(learning_rate, epochs, weight_decay=weight_decay)
    key_data = {"stage": "lp", **_base_key(ctx), "spec": spec.__dict__}

    def train():
        model = ctx.build_model()
        return model, train_head_only(model, ctx.train_features, ctx.collator(), spec, ctx.fit_kwargs("lp"))

    model, result, key = cached_stage(ctx, "lp", key_data, train)
    for param in model.parameters():
        param.requires_grad_(True)
    return model, result, key


def train_head_only(model: torch.nn.Module, features, collator, spec, fit_kwargs: dict) -> FitResult:
    """Linear probing in place: only the task head trains, on the frozen encoder's features (kept in eval mode).
    Every parameter is trainable again afterwards."""
    from hybridft.models import head_parameter_names

    head = set(head_parameter_names(model))
    for name, param in model.named_parameters():
        param.requires_grad_(name in head)
    with frozen_encoder_in_eval_mode(model):
        result = fit(model, features, collator, spec, **fit_kwargs)
    for param in model.parameters():
        param.requires_grad_(True)
    return result


def train_all_weights(model: torch.nn.Module, features, collator, spec, fit_kwargs: dict) -> FitResult:
    """Full fine-tuning in place: every parameter trains."""
    for param in model.parameters():
        param.requires_grad_(True)
    return fit(model, features, collator, spec, **fit_kwargs)


def fine_tune_from(
    ctx: TrainContext, pre: torch.nn.Module, pre_key: str, fields: StageFields, learning_rate: float | None = None
):
    """Stage 2: θ_fine, every weight trained starting from θ_pre. Returns (model, FitResult, stage key)."""
    import copy

    lr = fields.ft_learning_rate if learning_rate is None else learning_rate
    spec = ctx.spec(lr, fields.ft_epochs, weight_decay=fields.ft_weight_decay, warmup_ratio=fields.ft_warmup_ratio)
    key_data = {"stage": "lp_ft", **_base_key(ctx), "from": pre_key, "spec": spec.__dict__}

    def train():
        model = copy.deepcopy(pre)
        return model, train_all_weights(model, ctx.train_features, ctx.collator(), spec, ctx.fit_kwargs("lp_ft"))

    return cached_stage(ctx, "lp_ft", key_data, train)


def full_fine_tune(ctx: TrainContext, learning_rate: float, epochs: float | None, weight_decay: float,
                   warmup_ratio: float):  # fmt: skip
    """Every weight of the pretrained model trained (no probe first), cached as stage "ft". Returns (model, FitResult,
    stage key). For a causal LM this is both `plain` and the hybrid family's θ_fine, which share it at equal
    settings: its LM head already speaks, so there is no linear-probe stage (`hybridft.lm_distill`)."""
    spec = ctx.spec(learning_rate, epochs, weight_decay=weight_decay, warmup_ratio=warmup_ratio)
    key_data = {"stage": "ft", **_base_key(ctx), "spec": spec.__dict__}

    def train():
        model = ctx.build_model()
        return model, train_all_weights(model, ctx.train_features, ctx.collator(), spec, ctx.fit_kwargs("ft"))

    return cached_stage(ctx, "ft", key_data, train)


def teachers(ctx: TrainContext, fields: StageFields) -> Teachers:
    """θ_pre (LP) and θ_fine (LP-FT), from the cache where possible. For a causal LM: θ_pre is the pretrained LM
    itself and θ_fine its full fine-tune (`full_fine_tune`, shared with `plain`)."""
    if ctx.task.kind == "causal_lm":
        fine, ft_result, _ = full_fine_tune(
            ctx, fields.ft_learning_rate, fields.ft_epochs, fields.ft_weight_decay, fields.ft_warmup_ratio
        )
        return Teachers(pre=ctx.build_model(), fine=fine, fits=[ft_result])
    pre, lp_result, lp_key = linear_probe(ctx, fields.lp_learning_rate, fields.lp_epochs, fields.lp_weight_decay)
    fine, ft_result, _ = fine_tune_from(ctx, pre, lp_key, fields)
    return Teachers(pre=pre, fine=fine, fits=[lp_result, ft_result])
