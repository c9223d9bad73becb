"""The teacher stages of the hybrid method, cached on disk by the hash of their stage config.

1. LP teacher θ_pre: the pretrained encoder frozen, its features computed once, the task head fit to convergence by a
   convex solver (linear probing as in Kumar et al. 2022, `hybridft.probe`). The stage keeps θ_pre's logits on the
   training features (one matmul of the cached features), so the hybrid teacher pass does not run θ_pre again.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from hybridft.methods.base import FULL_FT_LR, FULL_FT_WARMUP, FULL_FT_WEIGHT_DECAY, TrainContext
from hybridft.probe import DEFAULT_FOLDS, DEFAULT_L2_GRID, ProbeSettings
from hybridft.training import FitResult, fit

# 3: the linear probe is a convex fit on cached features (`hybridft.probe`), its logits kept with the stage
STAGE_FORMAT = 3  # bump when the artifact layout or the recorded cost changes (2: tokens, steps, FLOPs, curve)

# The linear probe's Adam knobs, removed when the probe became a convex fit: what replaces each.
REMOVED_LP_FIELDS = {
    "lp_learning_rate": "the probe is fit to convergence by a convex solver (hybridft.probe), so it has no learning "
    "rate; its L2 strength is chosen from lp_l2_grid",
    "lp_epochs": "the probe is fit to convergence by a convex solver (hybridft.probe) on features computed once, so "
    "it has no epochs; its L2 strength is chosen from lp_l2_grid (lp_folds: cross-validation folds without a dev "
    "split)",
    "lp_weight_decay": "the probe's L2 strength is chosen from lp_l2_grid on the dev split (or by lp_folds-fold "
    "cross-validation)",
}


def removed_field_error(owner: str, name: str) -> ValueError:
    return ValueError(f"{owner}.{name} was removed: {REMOVED_LP_FIELDS[name]}")


@dataclass(frozen=True)
class StageFields:
    """Settings of the LP and LP-FT teacher stages, shared by every method built on them.

    ``lp_l2_grid``: the probe's candidate L2 strengths, ``lp_folds``: its cross-validation folds where the run has
    no dev split (`hybridft.probe`); ``ft_epochs`` None → the run's ``epochs``.
    """

    lp_l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    lp_folds: int = DEFAULT_FOLDS
    ft_learning_rate: float = FULL_FT_LR
    ft_epochs: float | None = None
    ft_weight_decay: float = FULL_FT_WEIGHT_DECAY
    ft_warmup_ratio: float = FULL_FT_WARMUP
    removed_fields: ClassVar[dict[str, str]] = REMOVED_LP_FIELDS

    def validate_stages(self) -> None:
        check_stage_fields(self)

    def probe_settings(self, seed: int) -> ProbeSettings:
        return probe_settings(self, seed)


def probe_settings(settings, seed: int) -> ProbeSettings:
    """The `ProbeSettings` of ``settings``' ``lp_l2_grid`` and ``lp_folds`` (a `StageFields` or the trainer's
    arguments) with ``seed``."""
    return ProbeSettings(l2_grid=tuple(settings.lp_l2_grid), folds=settings.lp_folds, seed=seed)


def check_probe_fields(settings) -> None:
    """ValueError naming ``settings``' ``lp_l2_grid`` or ``lp_folds`` (a `StageFields`, `LpConfig` or the trainer's
    arguments) when out of range. A list ``lp_l2_grid`` becomes a tuple (a TOML/JSON override), so the config stays
    hashable."""
    owner = type(settings).__name__
    grid = settings.lp_l2_grid
    if isinstance(grid, (str, bytes)) or not hasattr(grid, "__iter__"):
        raise ValueError(f"{owner}.lp_l2_grid must be a list of numbers > 0, got {grid!r}")
    object.__setattr__(settings, "lp_l2_grid", tuple(grid))
    try:
        ProbeSettings(l2_grid=tuple(grid), folds=settings.lp_folds)
    except ValueError as exc:
        raise ValueError(str(exc).replace("ProbeSettings.l2_grid", f"{owner}.lp_l2_grid")
                         .replace("ProbeSettings.folds", f"{owner}.lp_folds")) from None  # fmt: skip


def check_stage_fields(settings) -> None:
    """ValueError naming the teacher-stage field of ``settings`` (`StageFields` or `HybridTrainingArguments`) that
    is out of range (the probe's: `check_probe_fields`)."""
    owner = type(settings).__name__
    check_probe_fields(settings)
    if not settings.ft_learning_rate > 0:
        raise ValueError(f"{owner}.ft_learning_rate must be > 0, got {settings.ft_learning_rate}")
    if settings.ft_epochs is not None and not settings.ft_epochs > 0:
        raise ValueError(f"{owner}.ft_epochs must be None (the training epochs) or > 0, got {settings.ft_epochs}")
    if settings.ft_weight_decay < 0:
        raise ValueError(f"{owner}.ft_weight_decay must be >= 0, got {settings.ft_weight_decay}")
    if not 0.0 <= settings.ft_warmup_ratio < 1.0:
        raise ValueError(f"{owner}.ft_warmup_ratio must be in [0, 1), got {settings.ft_warmup_ratio}")


@dataclass
class Teachers:
    """θ_pre and θ_fine (frozen copies are up to the caller) and the cost of the stages that made them.

    ``pre_logits``: θ_pre's rows on the training features, from the probe (None for a causal LM); ``probe``: the
    probe's record (`hybridft.probe.ProbeResult.record`)."""

    pre: torch.nn.Module
    fine: torch.nn.Module
    fits: list[FitResult]
    pre_logits: Any = None
    probe: dict | None = None


@dataclass
class Probed:
    """The LP stage's output: θ_pre, its cost, its stage key, the probe's record and θ_pre's training rows."""

    model: torch.nn.Module
    fit: FitResult
    key: str
    record: dict = field(default_factory=dict)
    logits: Any = None


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


def _save(model: torch.nn.Module, result: FitResult, key_data: dict, target: Path, extra=None) -> None:
    from safetensors.torch import save_file, save_model

    with atomic_dir(target) as tmp:
        save_model(model, str(tmp / "model.safetensors"))  # tied weights (an LM's head) are stored once
        meta = {"config": key_data, "fit": result.to_dict()}
        if extra is not None:
            record, tensors = extra
            meta["extra"] = record
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "extra.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=repr))


def _load(build_fn, path: Path, with_extra: bool = False):
    from safetensors.torch import load_file, load_model

    meta = json.loads((path / "meta.json").read_text())
    model = build_fn()
    load_model(model, str(path / "model.safetensors"), strict=True)
    if not with_extra:
        return model, FitResult(**meta["fit"])
    return model, FitResult(**meta["fit"]), (meta["extra"], load_file(str(path / "extra.safetensors")))


def stored_stage(cache_dir: Path, stage: str, key_data: dict, train_fn, build_fn, *, with_extra: bool = False):
    """Load stage ``stage`` with config ``key_data`` from ``cache_dir/stages`` into ``build_fn()`` (a model of the
    same architecture), or run ``train_fn() -> (model, FitResult)`` and store it. Returns (model, FitResult, key).

    ``with_extra``: ``train_fn`` returns (model, FitResult, (record dict, {name: tensor})) and so does the stage,
    kept beside the weights (the probe's record and θ_pre's logits): (model, FitResult, key, extra)."""
    from hybridft.claims import claimed

    key = stable_hash({"format": STAGE_FORMAT, **key_data})
    path = Path(cache_dir) / "stages" / f"{stage}-{key}"
    with claimed(path, (path / "meta.json").is_file) as mine:  # concurrent workers: one trains, the others wait
        if not mine:
            loaded = _load(build_fn, path, with_extra)
            return (*loaded[:2], key, *loaded[2:])
        model, result, *extra = train_fn()
        if _rank() == 0:
            _save(model, result, key_data, path, extra[0] if with_extra else None)
    return (model, result, key, *extra)


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


def probe_stage(cache_dir: Path, stage: str, key_data: dict, build_fn, features, collator, *, kind: str,
                settings: ProbeSettings, batch_size: int, dev_features=None, progress: bool = False,
                device=None) -> Probed:  # fmt: skip
    """The LP stage, cached: ``build_fn()``'s head fit by the convex probe (`hybridft.probe.linear_probe_model`) on
    ``features`` (λ chosen on ``dev_features`` when given, else by cross-validation). The key holds the probe's
    settings and the dev features' hash."""
    from hybridft.distill import TeacherLogits, features_hash
    from hybridft.probe import linear_probe_model

    key_data = {**key_data, "probe": settings.key(), "probe_seed": settings.seed,
                "dev": None if dev_features is None else features_hash(dev_features)}  # fmt: skip

    def train():
        model = build_fn()
        result, probed = linear_probe_model(model, features, collator, kind=kind, batch_size=batch_size,
                                            dev_features=dev_features, settings=settings, progress=progress,
                                            device=device, stage=stage)  # fmt: skip
        tensors = {"logits_values": probed.logits.values, "logits_offsets": probed.logits.offsets}
        return model, result, (probed.record(), tensors)

    model, result, key, (record, tensors) = stored_stage(cache_dir, stage, key_data, train, build_fn,
                                                         with_extra=True)  # fmt: skip
    for param in model.parameters():  # trainable as after a fit, also when loaded into a model with frozen weights
        param.requires_grad_(True)
    logits = TeacherLogits(tensors["logits_values"], tensors["logits_offsets"], width=record["width"])
    return Probed(model, result, key, record, logits)


def linear_probe(ctx: TrainContext, settings: ProbeSettings) -> Probed:
    """Stage 1: θ_pre, the head fit to convergence on the frozen encoder's features (`hybridft.probe`); λ on the
    run's dev split when it has one, else by cross-validation."""
    if ctx.task.kind == "causal_lm":
        raise ValueError(
            f"task {ctx.task.name!r} is a causal LM: its pretrained head already speaks, so there is no linear-probe "
            "stage (lp and lp_ft do not apply; hybrid, kd_pre, kd_fine and wise_ft use the pretrained LM as θ_pre)"
        )
    from hybridft.methods.hybrid import _compute_device

    return probe_stage(ctx.cache_dir, "lp", {"stage": "lp", **_base_key(ctx)}, ctx.build_model, ctx.train_features,
                       ctx.collator(), kind=ctx.task.kind, settings=settings, batch_size=ctx.run.eval_batch_size,
                       dev_features=ctx.dev_features, progress=ctx.progress, device=_compute_device())  # fmt: skip


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
    probed = linear_probe(ctx, fields.probe_settings(ctx.run.seed))
    fine, ft_result, _ = fine_tune_from(ctx, probed.model, probed.key, fields)
    return Teachers(pre=probed.model, fine=fine, fits=[probed.fit, ft_result], pre_logits=probed.logits,
                    probe=probed.record)  # fmt: skip
