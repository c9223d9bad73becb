"""The distillation stage: rows per head kind, the regression loss, the teacher-logit cache, and the trainer itself."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from hybridft.distill import (
    SpanRows,
    TeacherLogits,
    TokenRows,
    cached_teacher_logits,
    fit_distillation,
    loss_for,
    regression_kd_loss,
    rows_for,
    teacher_forward_passes,
    with_index,
)
from hybridft.training import TrainSpec, fit


class _Out:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def _mask(lengths, width):
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()


def test_gather_fetches_each_features_rows_in_batch_order(seed):
    lengths = torch.randint(1, 6, (9,))
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    cache = TeacherLogits(torch.randn(int(lengths.sum()), 4), offsets)
    index = torch.tensor([7, 0, 3, 3, 8])
    expected = torch.cat([cache.values[offsets[i] : offsets[i + 1]] for i in index.tolist()])
    assert torch.equal(cache.gather(index), expected)
    single = TeacherLogits(torch.randn(9, 3), torch.arange(10))
    assert torch.equal(single.gather(index), single.values[index])


def test_token_rows_drop_padding_and_keep_ignored_labels_for_kd(seed):
    lengths, width, classes = [5, 2, 4], 6, 3
    mask = _mask(lengths, width)
    logits = torch.randn(3, width, classes)
    labels = torch.randint(0, classes, (3, width)).masked_fill(mask == 0, -100)
    labels[0, 1] = -100  # a non-first subword: no CE, still a KD row
    teacher = torch.randn(sum(lengths), classes)
    rows = TokenRows()
    stored, stored_lengths = rows.output_rows(_Out(logits=logits), {"attention_mask": mask})
    assert stored.shape == (11, classes) and stored_lengths.tolist() == lengths
    student, pre, _, row_labels = rows.loss_rows(
        _Out(logits=logits), {"attention_mask": mask}, {"labels": labels}, teacher, teacher
    )
    assert torch.equal(student, torch.cat([logits[b, :n] for b, n in enumerate(lengths)]))
    assert torch.equal(row_labels, torch.cat([labels[b, :n] for b, n in enumerate(lengths)]))
    assert int((row_labels == -100).sum()) == 1 and pre is teacher


def test_span_rows_are_two_row_sets_with_padding_at_minus_inf(seed):
    lengths, width = [6, 3], 7
    mask = _mask(lengths, width)
    start, end = torch.randn(2, width), torch.randn(2, width)
    out = _Out(start_logits=start, end_logits=end)
    rows = SpanRows()
    stored, _ = rows.output_rows(out, {"attention_mask": mask})
    assert stored.shape == (9, 2)
    targets = {"start_positions": torch.tensor([2, 0]), "end_positions": torch.tensor([4, 0])}
    student, pre, _, labels = rows.loss_rows(out, {"attention_mask": mask}, targets, stored, stored)
    assert student.shape == pre.shape == (4, width)
    assert labels.tolist() == [2, 0, 4, 0]
    assert torch.isneginf(student[1, 3:]).all() and torch.isneginf(pre[3, 3:]).all()
    assert torch.equal(student[0, :6], start[0, :6]) and torch.isneginf(student[0, 6])
    assert torch.equal(pre[2, :6], end[0, :6]) and torch.equal(student[3, :3], end[1, :3])


def _regression_reference(s, p, f, y, alpha, beta, gamma, ce_weight):
    s, p, f, y = (t.double() for t in (s, p, f, y))
    m = alpha * p + (1 - alpha) * s
    labelled = ~torch.isnan(y)
    label_term = ((m[labelled] - y[labelled]) ** 2).mean() if labelled.any() else torch.zeros((), dtype=s.dtype)
    return ce_weight * label_term + beta * ((m - p) ** 2).mean() + gamma * ((m - f) ** 2).mean()


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_regression_loss_matches_float64_reference_with_gradient(seed, alpha):
    s = torch.randn(11, requires_grad=True)
    p, f, y = torch.randn(11), torch.randn(11), torch.rand(11) * 5
    y[[2, 7]] = float("nan")  # unlabelled rows: no label term, still distilled
    loss = regression_kd_loss(s, p, f, y, alpha=alpha, beta=0.7, gamma=1.3, ce_weight=0.9)
    s64 = s.detach().double().requires_grad_(True)
    expected = _regression_reference(s64, p, f, y, alpha, 0.7, 1.3, 0.9)
    torch.testing.assert_close(loss.double(), expected, atol=1e-6, rtol=1e-6)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(s.grad.double(), s64.grad, atol=1e-6, rtol=1e-5)


def test_regression_loss_without_teachers_is_the_models_mse(seed):
    s, y = torch.randn(8), torch.rand(8)
    loss = regression_kd_loss(s, torch.randn(8), torch.randn(8), y, beta=0.0, gamma=0.0)
    torch.testing.assert_close(loss, F.mse_loss(s, y))
    with pytest.raises(ValueError, match="three"):
        regression_kd_loss(s[:, None], s[:, None], s[:, None])
    assert loss_for("regression") is regression_kd_loss and loss_for("token") is not regression_kd_loss


def test_output_mix_model_mixes_every_logit_field(seed):
    from transformers import BertConfig, BertForQuestionAnswering

    from hybridft.distill import OutputMixModel

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    student, teacher = BertForQuestionAnswering(config).eval(), BertForQuestionAnswering(config).eval()
    mixed = OutputMixModel(student, teacher, 0.3).eval()
    inputs = {"input_ids": torch.randint(0, 50, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    with torch.no_grad():
        out, s, t = mixed(**inputs), student(**inputs), teacher(**inputs)
    for field in ("start_logits", "end_logits"):
        torch.testing.assert_close(out[field], 0.3 * t[field] + 0.7 * s[field])
    assert not any(p.requires_grad for p in mixed.teacher.parameters())
    assert all(p.requires_grad for p in mixed.student.parameters())


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="no distillation rows for task kind 'ranking'"):
        rows_for("ranking")


def _distill_fit(ctx, model, features, spec, teacher, loss_kwargs, callbacks=(), args_overrides=None):
    return fit_distillation(
        model,
        features,
        ctx.collator(),
        spec,
        kind=ctx.task.kind,
        pre_logits=teacher,
        fine_logits=teacher,
        loss_kwargs=loss_kwargs,
        output_dir=ctx.work_dir / "distill",
        progress=False,
        callbacks=callbacks,
        args_overrides=args_overrides,
    )


def _teacher(ctx, model, features):
    logits, _ = cached_teacher_logits(
        model,
        features,
        ctx.collator(),
        rows_for(ctx.task.kind),
        cache_dir=ctx.cache_dir,
        key_data=ctx.data_key,
        batch_size=16,
        progress=False,
    )
    return logits


@pytest.mark.parametrize("task", ["sst2", "stsb", "conll2003", "squad_devsplit"])
def test_ce_only_distillation_is_plain_training(make_context, task):
    """β = γ = 0, α = 0, CE only: the same losses and updates as the model's own loss under the plain Trainer."""
    ctx, _ = make_context(task)
    if task == "squad_devsplit":
        # HF's QA loss softmaxes over padded positions too; ours puts them at -inf (as it should), so compare on
        # full-length windows, where there is no padding.
        lengths = [len(ids) for ids in ctx.train_features["input_ids"]]
        ctx.train_features = ctx.train_features.select([i for i, n in enumerate(lengths) if n == max(lengths)])
        assert len(ctx.train_features) >= 8
    start = ctx.build_model()
    features = with_index(ctx.train_features)
    # SGD: updates are linear in the gradients, so the comparison is not blurred by Adam's normalisation of
    # near-zero gradient components.
    spec = TrainSpec(learning_rate=0.05, epochs=2, batch_size=4, seed=11)
    sgd = {"optim": "sgd"}
    teacher = _teacher(ctx, start, features)
    plain = copy.deepcopy(start)
    plain_fit = fit(
        plain,
        ctx.train_features,
        ctx.collator(),
        spec,
        output_dir=ctx.work_dir / "plain",
        progress=False,
        args_overrides=sgd,
    )
    student = copy.deepcopy(start)
    kd_fit = _distill_fit(
        ctx,
        student,
        features,
        spec,
        teacher,
        {"alpha": 0.0, "beta": 0.0, "gamma": 0.0, "temperature": 2.0, "ce_weight": 1.0},
        args_overrides=sgd,
    )
    assert kd_fit.training_loss == pytest.approx(plain_fit.training_loss, rel=1e-4)
    moved = False
    for (name, a), b in zip(plain.state_dict().items(), student.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
        moved |= not torch.equal(a, start.state_dict()[name])
    assert moved


class _LossLog:
    def __init__(self):
        self.losses, self.counts = [], []

    def __call__(self):
        from transformers import TrainerCallback

        log = self

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                if logs and "loss" in logs:
                    log.losses.append(logs["loss"])

            def on_epoch_begin(self, args, state, control, **kw):
                log.counts.append(teacher_forward_passes())

            def on_epoch_end(self, args, state, control, **kw):
                log.counts.append(teacher_forward_passes())

        return Callback()


@pytest.mark.parametrize("task", ["sst2", "conll2003", "squad_devsplit"])
def test_distillation_loss_goes_down_on_a_repeated_batch(make_context, task):
    ctx, _ = make_context(task)
    teacher_model, student = ctx.build_model(), ctx.build_model()
    features = with_index(ctx.train_features.select(range(4)))
    teacher = _teacher(ctx, teacher_model, features)
    # A confident teacher (a random tiny model's logits are nearly uniform): the KD terms start far from their
    # minimum and the student can reach it, unlike a CE term fighting a teacher that disagrees with the labels.
    generator = torch.Generator().manual_seed(0)
    teacher = TeacherLogits(torch.randn(teacher.values.shape, generator=generator) * 4, teacher.offsets)
    log = _LossLog()
    spec = TrainSpec(learning_rate=1e-2, epochs=12, batch_size=4, seed=5, lr_scheduler_type="constant")
    _distill_fit(
        ctx,
        student,
        features,
        spec,
        teacher,
        {"alpha": 0.0, "beta": 1.0, "gamma": 1.0, "temperature": 2.0, "ce_weight": 0.1},
        callbacks=[log()],
        args_overrides={"logging_steps": 1},
    )
    assert len(log.losses) == 12
    assert sum(log.losses[-3:]) / 3 < 0.6 * log.losses[0], log.losses


def test_teacher_logits_are_computed_once_and_cached(make_context, tmp_path):
    ctx, _ = make_context("conll2003")
    ctx.cache_dir = tmp_path / "cache"
    teacher_model = ctx.build_model()
    features = with_index(ctx.train_features)
    before = teacher_forward_passes()
    teacher = _teacher(ctx, teacher_model, features)
    batches = -(-len(features) // 16)
    assert teacher_forward_passes() - before == batches
    again = _teacher(ctx, teacher_model, features)  # same weights, data, preprocessing: a disk hit
    assert teacher_forward_passes() - before == batches
    assert torch.equal(again.values, teacher.values) and torch.equal(again.offsets, teacher.offsets)
    log = _LossLog()
    spec = TrainSpec(learning_rate=1e-3, epochs=2, batch_size=8, seed=1)
    _distill_fit(
        ctx,
        ctx.build_model(),
        features,
        spec,
        teacher,
        {"alpha": 0.0, "beta": 1.0, "gamma": 1.0, "temperature": 1.0, "ce_weight": 1.0},
        callbacks=[log()],
    )
    assert len(log.counts) == 4 and len(set(log.counts)) == 1  # no teacher forward in epoch 1 or epoch 2
    with torch.no_grad():
        next(teacher_model.parameters()).add_(1.0)
    _teacher(ctx, teacher_model, features)  # other weights: a miss
    assert teacher_forward_passes() - before == 2 * batches
    assert not list((tmp_path / "cache" / "teacher_logits").glob("tmp-*"))
