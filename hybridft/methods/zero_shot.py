"""`zero_shot`: the pretrained causal LM, evaluated as it is (no training, no compute).

Only a model whose pretrained head already speaks the task's answers has a zero-shot score: a causal LM on a
`causal_lm` task (an encoder's classification head is new and random). It is θ_pre of the hybrid family, and the
α = 1 end of the WiSE-FT line, as a row of its own, so that every table says what fine-tuning adds to the model
it starts from.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridft.methods.base import Method, MethodConfig, TrainContext, Trained
from hybridft.methods.registry import register
from hybridft.models import count_parameters


@dataclass(frozen=True)
class ZeroShotConfig(MethodConfig):
    """No training: the optimisation fields are inherited and unused."""


@register
class ZeroShot(Method):
    name = "zero_shot"
    config_class = ZeroShotConfig
    task_kinds = ("causal_lm",)  # an encoder's task head is new: it has no zero-shot answer

    def train(self, ctx: TrainContext, config: ZeroShotConfig) -> Trained:
        self.check_task(ctx.task)
        model = ctx.build_model()
        _, total = count_parameters(model)
        return Trained(model=model, fits=[], trainable_params=0, total_params=total)
