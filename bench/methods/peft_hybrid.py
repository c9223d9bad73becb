"""Hybrid fine-tuning over a LoRA delta (`hybrid_lora`) and its compute-matched baseline (`lora_matched`).

The full-weight hybrid holds three copies of the model (θ_pre, θ_fine and the student) and trains every weight.
Here θ_fine = θ_pre + ΔW with a low-rank ΔW (the second source article's "θ_finetune = θ_pretrain + Δθ"), so one
copy of the encoder serves all three roles:

1. θ_pre: the linear probe (the pretrained encoder with the LP head; the stage `hybrid` shares, `hybridft.methods.stages`, `hybridft.teachers`).
2. θ_fine: θ_pre with a fresh LoRA adapter on the attention projections, the head trained in full through PEFT's
   ``modules_to_save`` (starting from the LP head). A cached stage of its own ("lp_lora"), not the `lora` method's
   run, which starts from a random head.
3. The teachers' logits are computed once and cached: θ_fine with the adapter on, θ_pre from the same weights with
   the adapter disabled (`AdapterDisabled`; PEFT's ``disable_adapter`` also swaps ``modules_to_save`` back to the
   original LP head).
4. The student is the same weights mixed in place: θ_pre + (1−α)·ΔW on the adapted layers (each ``lora_B`` scaled
   by 1−α, which scales ΔW = s·B·A exactly), and α·head_pre + (1−α)·head_fine on the head. This is the weight
   interpolation of the two merged models, layer for layer (PEFT's docs: a LoRA scale m ∈ [0, 1] is WiSE-FT's
   θ_pre + m·ΔW). It trains only its LoRA matrices and its head, on the dual-teacher loss of `hybrid`.

`lora_matched` is LoRA (the `lora` recipe: fresh adapter, random head) trained for as many epochs as make its FLOPs
equal to `hybrid_lora`'s whole pipeline, as `plain_matched` is to `hybrid` (`bench.methods.matched`):

    E = E_lp · F_lp / F_lora + E_ft + r · (n_teachers · F_fwd / F_lora + E_student)

with F_lora the LoRA training pass's FLOPs per token (forward 2·P, activation gradients back to the first adapted
layer, weight gradients of the adapter and head; `hybridft.compute`), F_lp the probe's, F_fwd = 2·P a teacher pass,
and r the distillation inputs' tokens over the training features' (1 without unlabelled inputs).

Causal LMs are not covered: their hybrid runs through `hybridft.lm_distill` (cached hidden states and the LM head),
which has no LoRA-delta path.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from dataclasses import dataclass

import torch

from bench.methods.matched import (
    MatchedFields,
    check_matched_fields,
    distill_ratio,
    pass_with_only,
    pipeline_epochs,
    train_matched,
)
from hybridft.compute import pass_parameters
from hybridft.distill import rows_for
from hybridft.fitting import fit
from hybridft.methods.base import Method, TrainContext, Trained
from hybridft.methods.distillation import fit_distillation
from hybridft.methods.hybrid import HybridConfig, check_number_alpha, distill_features
from hybridft.methods.peft_methods import Lora, LoraFields, LoraMethodConfig
from hybridft.methods.registry import register
from hybridft.methods.stages import base_key, linear_probe, teacher_rows
from hybridft.models import count_parameters
from hybridft.teachers import Teachers, stored_stage

ADAPTER = "default"  # PEFT's name for the one adapter of a model
KINDS = ("classification", "regression", "token", "qa")


@dataclass(frozen=True)
class HybridLoraConfig(LoraFields, HybridConfig):
    """`hybrid`'s loss and teacher settings with a LoRA delta (`LoraFields`: rank 8 on query and value).

    The LoRA stages (θ_fine's ``ft_*`` fields and the student's own) take `lora`'s recipe: lr 5e-4, 6 % warmup,
    weight decay 0.01 (Hu et al. 2022's RoBERTa GLUE runs); the LP stage is `hybrid`'s. α must be a number here."""

    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    ft_learning_rate: float = 5e-4
    ft_weight_decay: float = 0.01
    ft_warmup_ratio: float = 0.06

    def validate(self) -> None:
        super().validate()
        check_number_alpha(self, "hybrid_lora (one scale 1−α for every adapted layer)")
        self.validate_lora()


@dataclass(frozen=True)
class LoraMatchedConfig(MatchedFields, LoraMethodConfig):
    """LoRA (the `lora` recipe) at the epochs of `hybrid_lora`'s compute. The stage fields mirror `hybrid_lora`'s
    as `plain_matched`'s mirror `hybrid`'s (`PlainMatchedConfig`): ``ft_epochs``,
    ``student_epochs`` (None → the run's epochs), ``teacher_passes``, ``unlabeled_split`` / ``unlabeled_size``."""

    def validate(self) -> None:
        super().validate()
        check_matched_fields(self)


class AdapterDisabled(torch.nn.Module):
    """θ_pre on a LoRA model's weights: its forward runs with the adapter disabled (the base weights, and the
    original head in place of ``modules_to_save``). No second copy of the weights is made. The ``adapter_disabled``
    buffer keeps its weight hash (the teacher-logit cache key, `hybridft.distill.weights_hash`) apart from the same
    model's with the adapter on."""

    def __init__(self, peft_model) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.register_buffer("adapter_disabled", torch.ones(1))

    def forward(self, **inputs):
        with self.peft_model.disable_adapter():
            return self.peft_model(**inputs)


def lora_modules(peft_model) -> list[torch.nn.Module]:
    """The LoRA-adapted layers of ``peft_model`` (those holding the adapter's ``lora_B``)."""
    return [m for m in peft_model.modules() if ADAPTER in getattr(m, "lora_B", {})]


def saved_heads(peft_model) -> list[torch.nn.Module]:
    """PEFT's ``modules_to_save`` wrappers of ``peft_model``: each holds the original head and the trained copy."""
    from peft.utils.other import ModulesToSaveWrapper  # noqa: PLC0415  heavy optional: peft

    return [m for m in peft_model.modules() if isinstance(m, ModulesToSaveWrapper)]


def _wide(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


@torch.no_grad()
def mix_in_place(peft_model, alpha: float) -> None:
    """Turn θ_fine = θ_pre + ΔW (with head_fine) into θ_mix: every ``lora_B`` times (1−α), so ΔW → (1−α)·ΔW, and each
    trained head copy → α·head_pre + (1−α)·head_fine (low-precision weights computed in float32)."""
    heads = saved_heads(peft_model)
    if not heads:
        raise ValueError("the LoRA model has no modules_to_save head to mix")
    for module in lora_modules(peft_model):
        weight = module.lora_B[ADAPTER].weight
        weight.copy_(((1.0 - alpha) * _wide(weight)).to(weight.dtype))
    for wrapper in heads:
        pre = dict(wrapper.original_module.named_parameters())
        for name, param in wrapper.modules_to_save[ADAPTER].named_parameters():
            param.copy_((alpha * _wide(pre[name]) + (1.0 - alpha) * _wide(param)).to(param.dtype))


def lora_fine_tune_from(ctx: TrainContext, pre: torch.nn.Module, pre_key: str, config: HybridLoraConfig):
    """Stage 2: θ_fine, ``pre`` (consumed: it becomes the base of the returned model) with a fresh LoRA adapter
    and its head trained. Returns (PEFT model, FitResult), from the cache when the stage was trained before."""
    kind, seed = ctx.task.kind, ctx.run.seed
    spec = ctx.spec(config.ft_learning_rate, config.ft_epochs, weight_decay=config.ft_weight_decay,
                    warmup_ratio=config.ft_warmup_ratio)  # fmt: skip
    lora = {f.name: getattr(config, f.name) for f in dataclasses.fields(LoraFields)}
    key_data = {"stage": "lp_lora", **base_key(ctx), "from": pre_key, "spec": spec.__dict__, "lora": lora}

    def train():
        model = config.wrap(pre, kind, seed)  # trainable: the LoRA matrices and the head copy (PEFT's choice)
        return model, fit(model, ctx.train_features, ctx.collator(), spec, **ctx.fit_kwargs("lp_lora"))

    def build():
        return config.wrap(ctx.build_model(), kind, seed)

    model, result, _ = stored_stage(ctx.cache_dir, "lp_lora", key_data, train, build)
    return model, result


@contextlib.contextmanager
def _quiet_peft():
    """PEFT warns when a model with an adapter is wrapped again or saved without its config; neither applies."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="peft")
        yield


@register
class HybridLora(Method):
    name = "hybrid_lora"
    config_class = HybridLoraConfig
    task_kinds = KINDS

    def train(self, ctx: TrainContext, config: HybridLoraConfig) -> Trained:
        probed = linear_probe(ctx, config.probe_settings(ctx.run.seed))
        pre = copy.deepcopy(probed.model)  # θ_pre kept for the record's teacher scores
        with _quiet_peft():
            fine, ft_result = lora_fine_tune_from(ctx, probed.model, probed.key, config)
        # the probe's weights live on as ``fine``'s base (a freshly built model when the stage came from the cache)
        features, unlabelled = distill_features(ctx, config)
        pre_logits, fine_logits, teacher_cost = teacher_rows(
            ctx, features, rows_for(ctx.task.kind), AdapterDisabled(fine), fine,
            need_pre=config.beta > 0, need_fine=config.gamma > 0,
            pre_logits=probed.logits if unlabelled is None else None,  # = AdapterDisabled(fine)'s rows
        )  # fmt: skip
        pair = Teachers(pre, copy.deepcopy(fine), [probed.fit, ft_result], probed.logits, probed.record)
        mix_in_place(fine, config.alpha)
        student = fine  # trainable as PEFT wrapped it: the LoRA matrices and the head; the base stays frozen
        trainable, total = count_parameters(student)
        spec = ctx.spec(config.learning_rate, weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio)
        result = fit_distillation(
            student,
            features,
            ctx.collator(),
            spec,
            kind=ctx.task.kind,
            pre_logits=pre_logits,
            fine_logits=fine_logits,
            loss_kwargs={"alpha": 0.0, **config.loss_kwargs()},
            **ctx.fit_kwargs(self.name),
        )
        extra = {} if unlabelled is None else {"unlabeled": unlabelled.to_dict()}
        fits = [probed.fit, ft_result, teacher_cost, result]
        return Trained(model=student, fits=fits, trainable_params=trainable, total_params=total, extra=extra,
                       teachers=pair)  # fmt: skip


def lora_matched_epochs(model, config: LoraMatchedConfig, run_epochs: float, ratio: float = 1.0) -> float:
    """Epochs of LoRA training of ``model`` (a PEFT model, as wrapped for training) whose FLOPs equal
    `hybrid_lora`'s pipeline on the same features (module docstring)."""
    heads = {id(p) for wrapper in saved_heads(model) for p in wrapper.modules_to_save[ADAPTER].parameters()}
    probe = pass_with_only(model, lambda name, p: id(p) in heads)
    return pipeline_epochs(config, run_epochs, ratio, train=pass_parameters(model), probe=probe)


@register
class LoraMatched(Lora):
    name = "lora_matched"
    command = None  # a benchmark baseline, not offered by the command
    config_class = LoraMatchedConfig
    task_kinds = KINDS

    def train(self, ctx: TrainContext, config: LoraMatchedConfig) -> Trained:
        model = config.wrap(ctx.build_model(), ctx.task.kind, ctx.run.seed)
        target = lora_matched_epochs(model, config, ctx.run.epochs, distill_ratio(ctx, config))
        return train_matched(ctx, model, config, self.name, target)
