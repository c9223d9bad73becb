"""`plain`: full fine-tuning of every weight, encoder and head, with BERT's recipe (Devlin et al. 2019)."""

from __future__ import annotations

from dataclasses import dataclass

from hybridft.fitting import fit
from hybridft.methods.base import Method, MethodConfig, TrainContext, Trained
from hybridft.methods.registry import register
from hybridft.methods.stages import full_fine_tune
from hybridft.models import count_parameters


@dataclass(frozen=True)
class PlainConfig(MethodConfig):
    """Full fine-tuning: lr 2e-5, weight decay 0.01, 10% linear warmup (the MethodConfig defaults)."""


def train_whole_model(ctx: TrainContext, model, config: MethodConfig, stage: str) -> Trained:
    """Train ``model`` as configured (its requires_grad flags decide what moves) and wrap the result."""
    trainable, total = count_parameters(model)
    spec = ctx.spec(config.learning_rate, weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio)
    result = fit(model, ctx.train_features, ctx.collator(), spec, **ctx.fit_kwargs(stage))
    return Trained(model=model, fits=[result], trainable_params=trainable, total_params=total)


@register
class Plain(Method):
    name = "plain"
    config_class = PlainConfig
    command = "model"
    about = "full fine-tuning of every weight"

    def train(self, ctx: TrainContext, config: PlainConfig) -> Trained:
        if ctx.task.kind == "causal_lm":  # the cached full fine-tune the hybrid family's θ_fine shares
            model, result, _ = full_fine_tune(ctx, config.learning_rate, None, config.weight_decay,
                                              config.warmup_ratio)  # fmt: skip
            trainable, total = count_parameters(model)
            return Trained(model=model, fits=[result], trainable_params=trainable, total_params=total)
        return train_whole_model(ctx, ctx.build_model(), config, self.name)
