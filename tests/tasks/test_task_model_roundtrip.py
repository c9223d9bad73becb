"""Every task kind end to end: preprocess → collator → a tiny random BERT → compute_metrics, as a trainer would."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bench.data import subset
from bench.tasks import get_task


def _pad(arrays, value=-100.0):
    """Concatenate per-batch outputs padded along the sequence axis, the way transformers' Trainer does."""
    if arrays[0].ndim == 1 or all(a.shape[1:] == arrays[0].shape[1:] for a in arrays):
        return np.concatenate(arrays)
    length = max(a.shape[1] for a in arrays)
    padded = [
        np.pad(a, [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2), constant_values=value) for a in arrays
    ]
    return np.concatenate(padded)


@pytest.mark.parametrize("name", ["sst2", "stsb", "mrpc", "conll2003", "squad_devsplit"])
def test_collated_batches_drive_a_model_and_get_scored(name, data_dir, tokenizer, seed):
    from transformers import BertConfig

    task = get_task(name)
    examples = subset(task.load(task.eval_split, data_dir), 24, seed, task=name, split=task.eval_split)[0]
    features = task.preprocess(examples, tokenizer, max_length=64, stride=16, train=False)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        **task.model_kwargs(),
    )
    model = task.model_class().from_config(config).eval()
    loader = DataLoader(features, batch_size=7, collate_fn=task.collator(tokenizer))
    outputs = []
    with torch.no_grad():
        for batch in loader:
            result = model(**batch)
            assert math.isfinite(result.loss.item())
            logits = (result.start_logits, result.end_logits) if task.kind == "qa" else (result.logits,)
            outputs.append([x.numpy() for x in logits])
    merged = [_pad([batch[i] for batch in outputs]) for i in range(len(outputs[0]))]
    predictions = tuple(merged) if task.kind == "qa" else merged[0]
    scores = task.compute_metrics(predictions, features, examples)
    assert task.headline in scores and all(isinstance(v, float) for v in scores.values())
    assert not math.isnan(scores[task.headline])
