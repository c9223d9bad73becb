"""FLOP accounting: P_fwd / P_grad / P_trainable per pass kind, on a real (tiny) BERT and a hand-built module."""

from __future__ import annotations

import pytest
import torch

from hybridft.compute import batch_tokens, pass_parameters


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 4)  # excluded: 200 parameters
        self.lower = torch.nn.Linear(4, 4)  # 20
        self.upper = torch.nn.Linear(4, 4)  # 20
        self.head = torch.nn.Linear(4, 2)  # 10


def _only(model, names):
    for name, p in model.named_parameters():
        p.requires_grad_(any(name.startswith(n) for n in names))
    return model


def test_full_fine_tuning_is_six_p_per_token():
    params = pass_parameters(Toy())
    assert (params.forward, params.backward, params.trainable) == (50, 50, 50)
    assert params.train_flops_per_token == 300 and params.forward_flops_per_token == 100


def test_linear_probe_is_two_p_plus_four_p_head():
    params = pass_parameters(_only(Toy(), ["head"]))
    assert params.train_flops_per_token == 2 * 50 + 4 * 10


def test_gradients_flow_back_to_the_first_trainable_parameter():
    """An adapter-like trainable block in the middle: activation gradients over it and everything above it."""
    params = pass_parameters(_only(Toy(), ["upper", "head"]))
    assert (params.forward, params.backward, params.trainable) == (50, 30, 30)
    lowest = pass_parameters(_only(Toy(), ["lower.bias"]))
    assert (lowest.backward, lowest.trainable) == (50 - 16, 4)


def test_tied_parameters_count_once():
    model = Toy()
    model.upper.weight = model.lower.weight
    assert pass_parameters(model).forward == 50 - 16


def test_lora_on_a_frozen_encoder_is_about_four_p(data_dir):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from bench.tasks import get_task
    from hybridft.models import build_model

    model = build_model("tiny-bert", get_task("sst2"), seed=0)
    full = pass_parameters(model)
    lora = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
    params = pass_parameters(lora)
    assert params.trainable < 0.2 * full.trainable
    assert 3.9 * full.forward <= params.train_flops_per_token <= 4 * params.forward + 2 * params.trainable


def test_batch_tokens_counts_non_padding():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert int(batch_tokens({"attention_mask": mask, "input_ids": torch.zeros(2, 4)})) == 5
    assert int(batch_tokens({"input_ids": torch.zeros(2, 4)})) == 8
