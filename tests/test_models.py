"""Model specs: the tiny random BERT, seeded construction, head detection, parameter counts."""

from __future__ import annotations

import pytest
import torch

from hybridft.models import (
    TINY_BERT_CONFIG,
    build_model,
    count_parameters,
    head_module_names,
    head_parameter_names,
    load_tokenizer,
    model_path,
)


def test_tiny_bert_is_small_seeded_and_uses_minilm_vocab():
    from bench.tasks import get_task

    task = get_task("conll2003")
    a, b, c = build_model("tiny-bert", task, 0), build_model("tiny-bert", task, 0), build_model("tiny-bert", task, 1)
    assert a.config.num_hidden_layers == TINY_BERT_CONFIG["num_hidden_layers"] == 2
    assert a.config.hidden_size == 64 and a.config.num_labels == task.num_labels
    assert a.config.vocab_size == load_tokenizer("tiny-bert").vocab_size == load_tokenizer("minilm").vocab_size
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_building_leaves_the_global_generator_alone():
    from bench.tasks import get_task

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("tiny-bert", get_task("sst2"), 5)
    assert torch.equal(torch.rand(3), expected)


def test_minilm_loads_the_packaged_weights():
    from bench.tasks import get_task

    model = build_model("minilm", get_task("squad_devsplit"), 0)
    assert model.config.hidden_size == 384 and model.config.num_hidden_layers == 6
    assert head_module_names(model) == ["qa_outputs"]


def test_head_names_and_counts():
    from bench.tasks import get_task

    model = build_model("tiny-bert", get_task("stsb"), 0)
    assert head_parameter_names(model) == ["classifier.weight", "classifier.bias"]
    trainable, total = count_parameters(model)
    assert trainable == total == sum(p.numel() for p in model.parameters())
    model.bert.requires_grad_(False)
    assert count_parameters(model) == (64 + 1, total)
    with pytest.raises(ValueError, match="has no encoder attribute base_model_prefix"):
        head_parameter_names(model.bert)


def test_model_path_rejects_empty_specs_and_passes_hub_ids():
    assert model_path("bert-base-uncased") == "bert-base-uncased"
    with pytest.raises(ValueError, match="model must be a non-empty string"):
        model_path("")
