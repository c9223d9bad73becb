"""Ablations built from the hybrid method's teacher stages, without distillation: `lp`, `lp_ft`, `wise_ft`.

- `lp`: linear probing, the head fit to convergence on the frozen encoder's features (stage 1, `hybridft.probe`).
- `lp_ft`: LP then full fine-tuning from the probe (Kumar et al. 2022) (stages 1–2).
- `wise_ft`: the WiSE-FT weight-space mix α·θ_pre + (1−α)·θ_fine of those two (Wortsman et al. 2022) (stages 1–3).

The stages come from `hybridft.methods.stages`, `hybridft.teachers`, cached and shared with the hybrid method, so at equal settings each of
these costs only what the cache does not hold yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hybridft.interpolate import check_alpha, interpolate_models
from hybridft.methods.base import Method, MethodConfig, TrainContext, Trained
from hybridft.methods.registry import register
from hybridft.methods.stages import fine_tune_from, linear_probe, teachers
from hybridft.models import count_parameters, head_parameter_names
from hybridft.probe import DEFAULT_FOLDS, DEFAULT_L2_GRID
from hybridft.teachers import REMOVED_LP_FIELDS, StageFields, Teachers, check_probe_fields, probe_settings


@dataclass(frozen=True)
class LpConfig(MethodConfig):
    """Linear probing as LP-FT does it: the head fit to convergence on the frozen encoder's features, its L2 strength
    chosen from ``lp_l2_grid`` on the dev split or by ``lp_folds``-fold cross-validation (`hybridft.probe`). The
    optimisation fields of `MethodConfig` do not apply (the probe has no learning rate)."""

    lp_l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    lp_folds: int = DEFAULT_FOLDS
    removed_fields: ClassVar[dict[str, str]] = {
        **REMOVED_LP_FIELDS,
        "learning_rate": REMOVED_LP_FIELDS["lp_learning_rate"],
        "weight_decay": REMOVED_LP_FIELDS["lp_weight_decay"],
    }

    def validate(self) -> None:
        super().validate()
        check_probe_fields(self)


@register
class LinearProbe(Method):
    name = "lp"
    config_class = LpConfig
    task_kinds = ("classification", "regression", "token", "qa")  # a causal LM has no probe stage

    def make_config(self, method_args=(), learning_rate=None):
        if learning_rate is not None:
            raise ValueError(f"method 'lp' takes no learning rate (got {learning_rate}): "
                             f"{REMOVED_LP_FIELDS['lp_learning_rate']}")  # fmt: skip
        return super().make_config(method_args)

    def train(self, ctx: TrainContext, config: LpConfig) -> Trained:
        probed = linear_probe(ctx, probe_settings(config, ctx.run.seed))
        model = probed.model
        head = set(head_parameter_names(model))
        trainable = sum(p.numel() for n, p in model.named_parameters() if n in head)
        teachers = Teachers(pre=model, fine=None, fits=[probed.fit], pre_logits=probed.logits, probe=probed.record)
        return Trained(model=model, fits=[probed.fit], trainable_params=trainable,
                       total_params=count_parameters(model)[1], teachers=teachers)  # fmt: skip


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
        probed = linear_probe(ctx, config.probe_settings(ctx.run.seed))
        fine, ft_result, _ = fine_tune_from(ctx, probed.model, probed.key, config)
        trainable, total = count_parameters(fine)
        fits = [probed.fit, ft_result]
        pair = Teachers(probed.model, fine, fits, pre_logits=probed.logits, probe=probed.record)
        return Trained(model=fine, fits=fits, trainable_params=trainable, total_params=total, teachers=pair)


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
        return Trained(model=mixed, fits=pair.fits, trainable_params=trainable, total_params=total, teachers=pair)
