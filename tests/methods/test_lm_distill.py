"""The causal-LM hybrid student: rows at the response tokens, the loss through the LM heads, compute and matching.

References are independent of `hybridft.lm_distill`: the full-vocabulary logits of each model's own forward,
shifted by hand, through `hybrid_kd_loss`'s float64 reference.
"""

from __future__ import annotations

import pytest
import torch

from hybridft.distill import IGNORE_INDEX, TeacherLogits, compute_teacher_logits, with_index
from hybridft.lm_distill import (
    LmHeadLoss,
    LmRows,
    head_and_body,
    lm_matched_epochs,
    response_fraction,
    response_mask,
    student_flops,
)
from hybridft.loss import reference_loss
from hybridft.loss_checks import LossParams

VOCAB = 97


def _tiny_llama(seed: int, vocab: int = VOCAB):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def _features(seed: int, lengths=(9, 5, 13, 7), vocab: int = VOCAB):
    """LM features of uneven lengths; each has a prompt (labels −100) and a response of 1..4 tokens at its end."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for n in lengths:
        ids = torch.randint(1, vocab, (n,), generator=g).tolist()
        answer = int(torch.randint(1, min(4, n - 1) + 1, (), generator=g))
        rows["input_ids"].append(ids)
        rows["attention_mask"].append([1] * n)
        rows["labels"].append([IGNORE_INDEX] * (n - answer) + ids[n - answer :])
    return Dataset.from_dict(rows)


def _collate(features: list[dict]) -> dict:
    width = max(len(f["input_ids"]) for f in features)
    out = {"input_ids": [], "attention_mask": [], "labels": []}
    for f in features:
        pad = width - len(f["input_ids"])
        out["input_ids"].append(f["input_ids"] + [0] * pad)
        out["attention_mask"].append(f["attention_mask"] + [0] * pad)
        out["labels"].append(f["labels"] + [IGNORE_INDEX] * pad)
    return {k: torch.tensor(v) for k, v in out.items()}


def _reference_rows(model, features):
    """(logits at every response position, labels) from one unpadded full forward per feature."""
    logits, labels = [], []
    for ids, y in zip(features["input_ids"], features["labels"], strict=True):
        z = model(input_ids=torch.tensor([ids])).logits[0]
        y = torch.tensor(y)
        keep = y[1:] != IGNORE_INDEX
        logits.append(z[:-1][keep])
        labels.append(y[1:][keep])
    return torch.cat(logits), torch.cat(labels)


def test_response_mask_is_shifted_by_one():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6], [IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX]])
    assert response_mask(labels).tolist() == [[False, True, True], [True, False, False]]


def test_teacher_rows_are_hidden_states_at_response_positions(seed):
    model, features = _tiny_llama(seed), _features(seed)
    rows = LmRows()
    cached = compute_teacher_logits(model, features, _collate, rows, batch_size=3, progress=False)
    assert cached.values.shape[1] == model.config.hidden_size  # H values per row, not V logits
    reference_logits, _ = _reference_rows(model, features)
    with torch.no_grad():
        logits = cached.values @ model.lm_head.weight.T
    torch.testing.assert_close(logits, reference_logits, rtol=1e-5, atol=1e-5)
    responses = [sum(1 for y in labels[1:] if y != IGNORE_INDEX) for labels in features["labels"]]
    assert torch.diff(cached.offsets).tolist() == responses


@pytest.mark.parametrize("ce_weight,beta,gamma", [(1.0, 1.0, 1.0), (0.5, 0.0, 2.0), (0.0, 1.5, 0.0)])
def test_student_loss_and_gradient_match_full_logit_reference(seed, ce_weight, beta, gamma):
    student, pre, fine = _tiny_llama(seed), _tiny_llama(seed + 1), _tiny_llama(seed + 2)
    features = with_index(_features(seed + 3))
    rows = LmRows()
    pre_rows = compute_teacher_logits(pre, features, _collate, rows, batch_size=2, progress=False)
    fine_rows = compute_teacher_logits(fine, features, _collate, rows, batch_size=2, progress=False)
    loss_fn = LmHeadLoss(student.lm_head, pre.lm_head.weight, fine.lm_head.weight)
    kwargs = {"alpha": 0.0, "beta": beta, "gamma": gamma, "temperature": 2.0, "ce_weight": ce_weight}

    batch = _collate([features[i] for i in range(len(features))])
    index = torch.arange(len(features))
    targets = {"labels": batch["labels"]}
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    outputs = rows.student_forward(student, inputs)
    h, p, f, labels = rows.loss_rows(outputs, inputs, targets, pre_rows.gather(index), fine_rows.gather(index))
    loss = loss_fn(h, p, f, labels, ignore_index=IGNORE_INDEX, backend="torch", **kwargs)
    loss.backward()
    grads = {n: q.grad.clone() for n, q in student.named_parameters()}
    student.zero_grad()

    z_s, y = _reference_rows(student, features)
    with torch.no_grad():
        z_p, _ = _reference_rows(pre, features)
        z_f, _ = _reference_rows(fine, features)
    params = LossParams(reduction="mean", ignore_index=IGNORE_INDEX, **kwargs)
    ref = reference_loss(z_s.double(), z_p.double(), z_f.double(), y, params)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    assert torch.equal(labels, y)
    for name, param in student.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_teacher_head_weights_are_constants(seed):
    student, pre = _tiny_llama(seed), _tiny_llama(seed + 1)
    loss_fn = LmHeadLoss(student.lm_head, pre.lm_head.weight, pre.lm_head.weight)
    assert not loss_fn.pre_weight.requires_grad and not loss_fn.fine_weight.requires_grad
    assert loss_fn.student_head.weight is student.lm_head.weight  # read live, so optimizer steps are seen


def test_unlabelled_rows_are_refused():
    with pytest.raises(ValueError, match="no unlabelled rows"):
        LmRows().unlabelled({"labels": [1, 2]})
    with pytest.raises(KeyError, match="labels"):
        LmRows().loss_rows(None, {}, {}, None, None)


def test_compute_counts_the_tied_head_once_and_student_rows_by_hand(seed):
    from hybridft.compute import pass_parameters, tied_output_head

    model = _tiny_llama(seed)
    head = model.lm_head.weight.numel()
    every = sum(p.numel() for p in model.parameters())  # the tied tensor once
    assert tied_output_head(model) is model.lm_head.weight
    full = pass_parameters(model)
    assert full.forward == every  # the embedding's lookup is free, its tied head is not
    assert head_and_body(model) == (head, every - head)
    for p in model.parameters():
        p.requires_grad_(False)
    model.model.layers[1].mlp.down_proj.weight.requires_grad_(True)
    frozen = pass_parameters(model)
    down = model.model.layers[1].mlp.down_proj.weight.numel()
    assert frozen.trainable == down
    # gradients flow back from the head through everything after the trained layer (in module order) to it
    names = [n for n, _ in model.named_parameters()]
    after = names[names.index("model.layers.1.mlp.down_proj.weight") :]
    assert frozen.backward == sum(dict(model.named_parameters())[n].numel() for n in after) + head
    body = every - head
    assert student_flops(model, tokens=100, rows=7) == 6 * body * 100 + 10 * head * 7


def test_lm_matched_epochs_by_hand(seed):
    from bench.methods.matched import PlainMatchedConfig

    model, features = _tiny_llama(seed), _features(seed)
    head, body = head_and_body(model)
    rows, tokens = response_fraction(features)
    assert tokens == sum(len(x) for x in features["input_ids"])
    config = PlainMatchedConfig(ft_epochs=2.0, student_epochs=1.0, teacher_passes=2)
    assert 0 < rows < tokens  # prompt positions carry no label
    # one epoch of plain counts its head on the response rows, as the student does (hybridft.compute)
    expected = 2.0 + (2 * 2 * body * tokens + 6 * body * tokens + 10 * head * rows) / (
        6 * body * tokens + 6 * head * rows
    )
    assert lm_matched_epochs(model, features, config, run_epochs=3.0) == pytest.approx(expected)


@pytest.mark.parametrize("tied", [True, False])
def test_lm_training_flops_count_the_head_on_loss_rows_only(seed, tied):
    from hybridft.compute import batch_loss_rows, lm_head_weight, pass_parameters, training_flops

    model = _tiny_llama(seed)
    if not tied:  # an untied head is an ordinary parameter; it is still the head
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    head = model.lm_head.weight.numel()
    assert lm_head_weight(model) is model.lm_head.weight
    every = pass_parameters(model).forward
    body = pass_parameters(model, head=False)
    assert body.forward == every - head and pass_parameters(model).forward == every
    assert training_flops(model, tokens=50, loss_rows=3) == 6 * (every - head) * 50 + 6 * head * 3
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, 7, -100, -100, -100]])
    assert int(batch_loss_rows({"labels": labels})) == 3  # labels[:, 1:]: the next token of each position
    assert int(batch_loss_rows({"labels": torch.tensor([1, 0])})) == 0  # a classifier's labels: no rows
    for p in model.parameters():  # LoRA-like: the head frozen, gradients still flow through it
        p.requires_grad_(False)
    model.model.layers[0].mlp.down_proj.weight.requires_grad_(True)
    full, bare = pass_parameters(model), pass_parameters(model, head=False)
    assert full.train_flops_per_token - bare.train_flops_per_token == 4 * head
    assert training_flops(model, tokens=50, loss_rows=3) == bare.train_flops_per_token * 50 + 4 * head * 3


def test_plain_lm_fit_counts_its_head_on_the_response_rows(seed, tmp_path):
    from hybridft.fitting import TrainSpec, fit

    model, features = _tiny_llama(seed), _features(seed)
    head, body = head_and_body(model)
    rows, tokens = response_fraction(features)
    result = fit(model, features, _collate, TrainSpec(learning_rate=1e-3, epochs=2.0, batch_size=3, seed=seed),
                 output_dir=tmp_path, progress=False)  # fmt: skip
    assert (result.tokens, result.optimizer_steps) == (2 * tokens, 4)  # padding not counted
    assert result.flops == 6 * body * 2 * tokens + 6 * head * 2 * rows


def test_teacher_logits_gather_keeps_variable_rows_per_feature(seed):
    values = torch.randn(6, 4)
    cached = TeacherLogits(values, torch.tensor([0, 2, 2, 6]))
    assert torch.equal(cached.gather(torch.tensor([2, 0])), torch.cat([values[2:6], values[0:2]]))
