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
import copy
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from hybridft.batching import feature_lengths
from hybridft.claims import claimed
from hybridft.compute import pass_parameters
from hybridft.distill import TeacherLogits, cached_teacher_logits, features_hash
from hybridft.fitting import FitResult, fit
from hybridft.probe import DEFAULT_FOLDS, DEFAULT_L2_GRID, ProbeSettings, linear_probe_model

# BERT (Devlin et al. 2019, appendix A.3): Adam, lr in {5e-5, 3e-5, 2e-5}, weight decay 0.01, linear warmup over the
# first 10% of steps. Used for full fine-tuning wherever a method fine-tunes every weight.
FULL_FT_LR = 2e-5
FULL_FT_WEIGHT_DECAY = 0.01
FULL_FT_WARMUP = 0.1

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
    keys: dict[str, str] = field(default_factory=dict)  # each stage built or loaded: its cache key
    probed: Probed | None = None  # the LP stage's output (None for a causal LM)


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
    with atomic_dir(target) as tmp:
        save_model(model, str(tmp / "model.safetensors"))  # tied weights (an LM's head) are stored once
        meta = {"config": key_data, "fit": result.to_dict()}
        if extra is not None:
            record, tensors = extra
            meta["extra"] = record
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "extra.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=repr))


def _load(build_fn, path: Path, with_extra: bool = False):
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


def probe_stage(cache_dir: Path, stage: str, key_data: dict, build_fn, features, collator, *, kind: str,
                settings: ProbeSettings, batch_size: int, dev_features=None, progress: bool = False,
                device=None) -> Probed:  # fmt: skip
    """The LP stage, cached: ``build_fn()``'s head fit by the convex probe (`hybridft.probe.linear_probe_model`) on
    ``features`` (λ chosen on ``dev_features`` when given, else by cross-validation). The key holds the probe's
    settings and the dev features' hash."""
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


def train_all_weights(model: torch.nn.Module, features, collator, spec, fit_kwargs: dict) -> FitResult:
    """Full fine-tuning in place: every parameter trains."""
    for param in model.parameters():
        param.requires_grad_(True)
    return fit(model, features, collator, spec, **fit_kwargs)


def compute_device():
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}") if torch.cuda.is_available() else "cpu"


def needed_teachers(pre, fine, *, need_pre: bool, need_fine: bool) -> list:
    """The teachers to run: those whose loss weight is not 0 (θ_fine alone when neither is)."""
    return [m for m, need in ((pre, need_pre), (fine, need_fine)) if need] or [fine]


def assign_teachers(computed: list, *, need_pre: bool, need_fine: bool):
    """(θ_pre's, θ_fine's) from per-teacher results in `needed_teachers` order; a teacher that was not run takes the
    other's (its loss weight is 0, so it only fills the argument)."""
    return (computed[0] if need_pre else computed[-1]), (computed[-1] if need_fine else computed[0])


def teacher_passes(models, features, collator, rows, *, device, cache_dir, key_data, batch_size, progress):
    """Each model's cached rows on ``features`` (`cached_teacher_logits`, run on ``device``, then moved back to the
    CPU), and the compute time recorded for them. The bench's hybrid methods and `hybridft.HybridTrainer` both run
    their teachers through this."""
    computed, seconds = [], 0.0
    for model in models:
        model.to(device)
        values, elapsed = cached_teacher_logits(model, features, collator, rows, cache_dir=cache_dir,
                                                key_data=key_data, batch_size=batch_size, progress=progress)  # fmt: skip
        model.to("cpu")
        computed.append(values)
        seconds += elapsed
    return computed, seconds


def probe_teacher_rows(run_passes, features, pre, fine, *, need_pre: bool, need_fine: bool, pre_logits=None):
    """`teacher_rows` given ``run_passes(models) -> (rows per model, seconds)``: θ_pre's rows come from
    ``pre_logits`` when given (one matmul already done by the probe, counted here at 2·H·C per row), and only the
    teachers left are run. The bench's methods and `hybridft.HybridTrainer` share it."""
    if pre_logits is not None and need_pre:
        if len(pre_logits) != len(features):
            raise ValueError(f"the probe's θ_pre rows cover {len(pre_logits)} features, the distillation set has "
                             f"{len(features)}: pass pre_logits only for the training features themselves")  # fmt: skip
        run = [fine] if need_fine else []
        computed, seconds = run_passes(run) if run else ([], 0.0)
        fine_logits = computed[0] if need_fine else pre_logits
        head_flops = 2.0 * pre_logits.values.numel() * pre_logits.width
        return pre_logits, fine_logits, teacher_pass_cost(features, run, seconds, extra_flops=head_flops)
    needed = needed_teachers(pre, fine, need_pre=need_pre, need_fine=need_fine)
    computed, seconds = run_passes(needed)
    pre_rows, fine_rows = assign_teachers(computed, need_pre=need_pre, need_fine=need_fine)
    return pre_rows, fine_rows, teacher_pass_cost(features, needed, seconds)


def teacher_pass_cost(features, models, seconds: float, extra_flops: float = 0.0) -> FitResult:
    """The cost of one forward pass of each of ``models`` over ``features`` (their non-padding tokens, 2·P each),
    plus ``extra_flops`` (θ_pre's rows from the probe's features)."""
    tokens = sum(feature_lengths(features))
    flops = sum(tokens * pass_parameters(model).forward_flops_per_token for model in models)
    return FitResult(
        train_time_s=seconds,
        samples=len(features) * len(models),
        training_loss=0.0,
        stage="teacher_logits",
        forward_tokens=tokens * len(models),
        flops=float(flops + extra_flops),
    )


def weights_stage(cache_dir: Path, stage: str, key_data: dict, start_fn, features, collator, spec,
                  fit_kwargs: dict) -> tuple[torch.nn.Module, FitResult, str]:  # fmt: skip
    """A cached stage that trains every weight of ``start_fn()`` on ``features`` (LP-FT's θ_fine, FT), under the key
    ``{"stage": stage, **key_data, "spec": spec}``; a stored one loads into ``start_fn()``. Returns (model,
    FitResult, stage key)."""
    key = {"stage": stage, **key_data, "spec": spec.__dict__}

    def train():
        model = start_fn()
        return model, train_all_weights(model, features, collator, spec, fit_kwargs)

    return stored_stage(cache_dir, stage, key, train, start_fn)


def lp_stage(cache_dir: Path, key_data: dict, build_fn, features, collator, **probe_kwargs) -> Probed:
    """Stage "lp", θ_pre (`probe_stage`), under ``key_data``: the lp method, LP-FT, the hybrid family and
    `HybridTrainer` all key it here, so at equal inputs they share one artifact."""
    return probe_stage(cache_dir, "lp", {"stage": "lp", **key_data}, build_fn, features, collator, **probe_kwargs)


def lp_ft_stage(cache_dir: Path, key_data: dict, pre: torch.nn.Module, pre_key: str, features, collator, spec,
                fit_kwargs: dict) -> tuple[torch.nn.Module, FitResult, str]:  # fmt: skip
    """Stage "lp_ft", θ_fine: every weight trained from θ_pre (``pre``, stored under ``pre_key``)."""
    return weights_stage(cache_dir, "lp_ft", {**key_data, "from": pre_key}, lambda: copy.deepcopy(pre), features,
                         collator, spec, fit_kwargs)  # fmt: skip


def build_teachers(cache_dir: Path, key_data: dict, build_fn, features, collator, *, kind: str,
                   probe: ProbeSettings, ft_spec, fit_kwargs, batch_size: int, dev_features=None,
                   progress: bool = False, device=None, pre=None, fine=None) -> Teachers:  # fmt: skip
    """The one teacher pipeline: θ_pre and θ_fine, each a cached stage, for `HybridTrainer` and for the methods
    (`hybridft.methods.stages.teachers`) alike. The caller says what identifies its inputs (``key_data``: the model
    spec, task, seed and data key of a run, or the hash of a model's weights and features) and gives ``build_fn()``,
    a fresh copy of the pretrained model.

    - A task head: θ_pre is stage "lp", the head fit by the convex probe (`probe_stage`, λ on ``dev_features`` or by
      cross-validation); θ_fine is stage "lp_ft", every weight trained from θ_pre with ``ft_spec``.
    - A causal LM: θ_pre is the pretrained LM (``pre``, else ``build_fn()``); θ_fine is stage "ft", every weight
      trained from it (the stage `plain` shares at equal settings).

    ``fine``: a θ_fine given by the caller, not trained. ``fit_kwargs(stage)``: where a trained stage writes (output
    folder, progress, logs)."""
    fits, keys = [], {}
    if kind == "causal_lm":
        if fine is None:
            fine, result, keys["ft"] = weights_stage(cache_dir, "ft", key_data, build_fn, features, collator, ft_spec,
                                                     fit_kwargs("ft"))  # fmt: skip
            fits.append(result)
        return Teachers(pre=build_fn() if pre is None else pre, fine=fine, fits=fits, keys=keys)
    probed = lp_stage(cache_dir, key_data, build_fn, features, collator, kind=kind, settings=probe,
                      batch_size=batch_size, dev_features=dev_features, progress=progress, device=device)  # fmt: skip
    fits.append(probed.fit)
    keys["lp"] = probed.key
    if fine is None:
        fine, result, keys["lp_ft"] = lp_ft_stage(cache_dir, key_data, probed.model, probed.key, features, collator,
                                                  ft_spec, fit_kwargs("lp_ft"))  # fmt: skip
        fits.append(result)
    return Teachers(pre=probed.model, fine=fine, fits=fits, pre_logits=probed.logits, probe=probed.record, keys=keys,
                    probed=probed)  # fmt: skip
