"""Parameter-efficient methods: `adapter` (AdapterHub bottleneck adapters) and `lora` (PEFT).

Both freeze the pretrained encoder and train the new modules plus the task head, which is new for the task and
must learn (AdapterHub's ``train_adapter`` freezes it, so it is switched back on; PEFT keeps it through
``modules_to_save``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import transformers

from hybridft.methods.base import Method, MethodConfig, TrainContext, Trained
from hybridft.methods.plain import train_whole_model
from hybridft.methods.registry import register
from hybridft.models import head_module_names, head_parameter_names, seeded

ADAPTER_ARCHITECTURES = ("seq_bn", "double_seq_bn")
ADAPTERS_EXTRA = "pip install 'hybridft[adapters]'"


def adapters_missing() -> str | None:
    """Why the `adapter` method cannot run in this environment, or None when it can. AdapterHub's `adapters` is an
    optional extra: its 1.3 release (the latest) imports on transformers 4.x only."""
    try:
        import adapters  # noqa: F401, PLC0415  heavy optional: adapters
    except Exception as err:  # not installed, or installed beside a transformers it does not import on
        return (f"method 'adapter' needs AdapterHub's `adapters` package ({ADAPTERS_EXTRA}), which imports on "
                f"transformers < 5; this environment has transformers {transformers.__version__}, and importing "
                f"adapters failed: {type(err).__name__}: {err}")  # fmt: skip
    return None


@dataclass(frozen=True)
class AdapterMethodConfig(MethodConfig):
    """Bottleneck adapters. ``seq_bn``: one adapter after each layer's feed-forward block (Pfeiffer et al. 2021);
    ``double_seq_bn``: two per layer, after attention and feed-forward (Houlsby et al. 2019). Reduction factor 16
    and lr 1e-4 as in AdapterHub's GLUE setup (Pfeiffer et al. 2020); Houlsby et al. searched {3e-5, 3e-4, 3e-3}."""

    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1  # the budget rule's warmup, as for full fine-tuning (AdapterHub's scripts: none)
    architecture: str = "seq_bn"
    reduction_factor: int = 16

    def validate(self) -> None:
        super().validate()
        if self.architecture not in ADAPTER_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ADAPTER_ARCHITECTURES}, got {self.architecture!r}")
        if not (isinstance(self.reduction_factor, int) and self.reduction_factor >= 1):
            raise ValueError(f"reduction_factor must be an integer >= 1, got {self.reduction_factor!r}")


@register
class Adapter(Method):
    name = "adapter"
    config_class = AdapterMethodConfig
    command = "adapter"
    about = "a bottleneck adapter (AdapterHub seq_bn) and the task head"

    def check_run(self, task, config) -> None:
        """Refused before any training where `adapters` does not import (`adapters_missing`)."""
        super().check_run(task, config)
        reason = adapters_missing()
        if reason is not None:
            raise ImportError(reason)

    def train(self, ctx: TrainContext, config: AdapterMethodConfig) -> Trained:
        import adapters  # noqa: PLC0415  heavy optional: adapters

        model = ctx.build_model()
        # A causal LM's head is its pretrained (tied) LM head: it stays frozen with the rest. Any other task's head
        # is new and trains.
        head = set() if ctx.task.kind == "causal_lm" else set(head_parameter_names(model))
        adapters.init(model)
        adapter_config = adapters.AdapterConfig.load(config.architecture, reduction_factor=config.reduction_factor)
        # add_adapter runs an empty forward context before the new adapter is active, and AdapterHub then logs
        # "adapters available but none are activated" although the adapter is active for every real forward pass.
        adapters_logger = logging.getLogger("adapters.model_mixin")
        level = adapters_logger.level
        adapters_logger.setLevel(logging.ERROR)
        try:
            with seeded(ctx.run.seed):  # the adapter weights' initialisation
                model.add_adapter(ctx.task.name, config=adapter_config, set_active=True)
        finally:
            adapters_logger.setLevel(level)
        model.train_adapter(ctx.task.name)  # freezes every other weight, the head included
        for name, param in model.named_parameters():
            if name in head:
                param.requires_grad_(True)
        return train_whole_model(ctx, model, config, self.name)


PEFT_TASK_TYPES = {
    "classification": "SEQ_CLS",
    "regression": "SEQ_CLS",
    "token": "TOKEN_CLS",
    "qa": "QUESTION_ANS",
    "causal_lm": "CAUSAL_LM",
}
ENCODER_LORA_MODULES = ("query", "value")
# Every attention and MLP projection of a Llama-style decoder (QLoRA's "all linear" choice). PEFT's method comparison
# keeps PEFT's Llama default, q_proj and v_proj only; the llm-paper profile sets that to follow it.
CAUSAL_LM_LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraFields:
    """The LoRA adapter's own settings (Hu et al. 2022): rank 8 on the attention query and value projections;
    lora_alpha 16 (scale α/r = 2) as in PEFT's sequence-classification examples (the paper's RoBERTa runs use
    α = r = 8); dropout 0.1. Shared by `lora` and the LoRA-delta hybrid (`bench.methods.peft_hybrid`)."""

    r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] | None = None  # None: ENCODER_LORA_MODULES, or CAUSAL_LM_LORA_MODULES on an LM

    def modules_for(self, kind: str) -> tuple[str, ...]:
        if self.target_modules is not None:
            return self.target_modules
        return CAUSAL_LM_LORA_MODULES if kind == "causal_lm" else ENCODER_LORA_MODULES

    def validate_lora(self) -> None:
        if isinstance(self.target_modules, list):  # from a TOML/JSON override
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"r must be an integer >= 1, got {self.r!r}")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.target_modules is not None and (
            not self.target_modules or not all(isinstance(m, str) for m in self.target_modules)
        ):
            raise ValueError(f"target_modules must be a non-empty tuple of module names, got {self.target_modules!r}")

    def peft_config(self, model, kind: str):
        """PEFT's `LoraConfig` for ``model`` on a task of ``kind``: the task head (new for the task) is trained in
        full through ``modules_to_save``; a causal LM's head is pretrained (and tied), so it is not."""
        from peft import LoraConfig  # noqa: PLC0415  heavy optional: peft

        return LoraConfig(
            task_type=PEFT_TASK_TYPES[kind],
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.modules_for(kind)),
            modules_to_save=None if kind == "causal_lm" else head_module_names(model),
        )

    def wrap(self, model, kind: str, seed: int):
        """``model`` with a fresh LoRA adapter (its A matrices drawn from ``seed``), trainable: LoRA and the head."""
        from peft import get_peft_model  # noqa: PLC0415  heavy optional: peft

        with seeded(seed):  # LoRA's A matrices are drawn at wrapping time
            return get_peft_model(model, self.peft_config(model, kind))


@dataclass(frozen=True)
class LoraMethodConfig(LoraFields, MethodConfig):
    """LoRA (`LoraFields`); lr 5e-4 (10x+ full FT's) and 6% linear warmup as in the paper's RoBERTa-base GLUE runs
    (Table 9); weight decay 0.01 as for full fine-tuning."""

    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06

    def validate(self) -> None:
        super().validate()
        self.validate_lora()


@register
class Lora(Method):
    name = "lora"
    command = "merged"
    about = "LoRA on the attention query and value projections, merged into the weights"
    config_class = LoraMethodConfig

    def train(self, ctx: TrainContext, config: LoraMethodConfig) -> Trained:
        model = config.wrap(ctx.build_model(), ctx.task.kind, ctx.run.seed)
        return train_whole_model(ctx, model, config, self.name)


@register
class LoraPaper(Lora):
    """`lora` under its own name, for a published per-task recipe (microsoft/LoRA's RoBERTa scripts in the paper
    profile) that does not follow the profile's budget rule: a row of its own, never mixed into `lora`."""

    name = "lora_paper"
    command = None  # the command offers `lora`
