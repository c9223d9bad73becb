"""Ablations built from the hybrid method's teacher stages, without distillation: `lp`, `lp_ft`, `wise_ft`.

- `lp`: linear probing, the head trained on the frozen encoder (stage 1).
- `lp_ft`: LP then full fine-tuning from the probe (Kumar et al. 2022) (stages 1–2).
- `wise_ft`: the WiSE-FT weight-space mix α·θ_pre + (1−α)·θ_fine of those two (Wortsman et al. 2022) (stages 1–3).

The stages come from `hybridft.stages`, cached and shared with the hybrid method, so at equal settings each of
these costs only what the cache does not hold yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridft.interpolate import check_alpha, interpolate_models
from hybridft.methods import register
from hybridft.methods.base import Method, MethodConfig, TrainContext, Trained
from hybridft.models import count_parameters, head_parameter_names
from hybridft.stages import LP_LR, StageFields, fine_tune_from, linear_probe, teachers


@dataclass(frozen=True)
class LpConfig(MethodConfig):
    """Linear probing with Adam at lr 1e-3, no weight decay or warmup (the LP stage's defaults)."""

    learning_rate: float = LP_LR
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0


@register
class LinearProbe(Method):
    name = "lp"
    config_class = LpConfig
    task_kinds = ("classification", "regression", "token", "qa")  # a causal LM has no probe stage

    def train(self, ctx: TrainContext, config: LpConfig) -> Trained:
        model, result, _ = linear_probe(ctx, config.learning_rate, None, config.weight_decay)
        head = set(head_parameter_names(model))
        trainable = sum(p.numel() for n, p in model.named_parameters() if n in head)
        return Trained(model=model, fits=[result], trainable_params=trainable, total_params=count_parameters(model)[1])


@dataclass(frozen=True)
class LpFtConfig(StageFields, MethodConfig):
    """LP (``lp_*`` fields) then full fine-tuning (``ft_*`` fields; RunConfig.learning_rate sets ft_learning_rate)."""

    def validate(self) -> None:
        super().validate()
        self.validate_stages()


@register
class LpFt(Method):
    name = "lp_ft"
    config_class = LpFtConfig
    task_kinds = ("classification", "regression", "token", "qa")  # a causal LM has no probe stage
    lr_field = "ft_learning_rate"

    def train(self, ctx: TrainContext, config: LpFtConfig) -> Trained:
        pre, lp_result, lp_key = linear_probe(ctx, config.lp_learning_rate, config.lp_epochs, config.lp_weight_decay)
        fine, ft_result, _ = fine_tune_from(ctx, pre, lp_key, config)
        trainable, total = count_parameters(fine)
        return Trained(model=fine, fits=[lp_result, ft_result], trainable_params=trainable, total_params=total)


@dataclass(frozen=True)
class WiseFtConfig(LpFtConfig):
    """LP-FT teachers mixed in weight space at ``alpha`` (1 = θ_pre); 0.5 is WiSE-FT's default mixing coefficient."""

    alpha: float = 0.5

    def validate(self) -> None:
        super().validate()
        check_alpha(self.alpha)


@register
class WiseFt(Method):
    name = "wise_ft"
    config_class = WiseFtConfig
    lr_field = "ft_learning_rate"

    def train(self, ctx: TrainContext, config: WiseFtConfig) -> Trained:
        pair = teachers(ctx, config)
        mixed = interpolate_models(pair.pre, pair.fine, config.alpha)
        trainable, total = count_parameters(mixed)
        return Trained(model=mixed, fits=pair.fits, trainable_params=trainable, total_params=total)
