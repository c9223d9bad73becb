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
    loss_for,
    regression_kd_loss,
    rows_for,
    teacher_forward_passes,
    with_index,
)
from hybridft.fitting import TrainSpec, fit
from hybridft.methods.distillation import fit_distillation


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


def test_token_rows_are_the_first_subwords_only(seed):
    """Special tokens, later subwords and padding get no row; teacher and student rows are the same positions."""
    lengths, width, classes = [5, 2, 4], 6, 3
    mask = _mask(lengths, width)
    kd_mask = torch.tensor([[0, 1, 0, 1, 0, 1], [0, 1, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]])  # row 0: [SEP] at 4
    kd_mask[0, 5] = 1  # a stray 1 on padding stays out (kd_mask & attention_mask)
    first = kd_mask.bool() & mask.bool()
    logits = torch.randn(3, width, classes)
    labels = torch.randint(0, classes, (3, width)).masked_fill(~first, -100)
    batch = {"attention_mask": mask, "kd_mask": kd_mask}
    teacher = torch.randn(int(first.sum()), classes)
    rows = TokenRows()
    stored, stored_lengths = rows.output_rows(_Out(logits=logits), batch)
    assert stored.shape == (5, classes) and stored_lengths.tolist() == [2, 1, 2]
    assert torch.equal(stored, torch.stack([logits[0, 1], logits[0, 3], logits[1, 1], logits[2, 1], logits[2, 2]]))
    student, pre, _, row_labels = rows.loss_rows(_Out(logits=logits), batch, {"labels": labels}, teacher, teacher)
    assert torch.equal(student, stored) and pre is teacher
    assert torch.equal(row_labels, labels[first]) and bool((row_labels >= 0).all())
    unlabelled = labels.new_full(labels.shape, -100)  # an unlabelled feature keeps its KD rows
    _, _, _, none = rows.loss_rows(_Out(logits=logits), batch, {"labels": unlabelled}, teacher, teacher)
    assert none.shape == (5,) and bool((none == -100).all())
    with pytest.raises(KeyError, match="kd_mask"):
        rows.output_rows(_Out(logits=logits), {"attention_mask": mask})


def test_token_rows_collator_pads_the_mask_and_hides_it_from_the_task_collator(data_dir):
    from bench.data import subset
    from bench.tasks import get_task
    from hybridft.models import load_tokenizer

    task, tokenizer = get_task("conll2003"), load_tokenizer("tiny-bert")
    examples = subset(task.load("train", data_dir), 9, 0, task="conll2003", split="train")[0]
    features = task.preprocess(examples, tokenizer, max_length=32, train=True)
    seen = []

    def inner(batch):
        seen.extend(batch)
        return task.collator(tokenizer)(batch)

    rows = TokenRows()
    batch = rows.collator(inner)([features[i] for i in range(9)])
    assert all("kd_mask" not in f for f in seen)
    width = batch["input_ids"].shape[1]
    assert batch["kd_mask"].dtype == torch.long and batch["kd_mask"].shape == (9, width)
    for i in range(9):
        mask = features[i]["kd_mask"]
        assert batch["kd_mask"][i, : len(mask)].tolist() == mask and not batch["kd_mask"][i, len(mask) :].any()
    assert "kd_mask" not in task.collator(tokenizer)([features[i] for i in range(9)])
    bare = [{k: v for k, v in features[i].items() if k != "kd_mask"} for i in range(2)]
    with pytest.raises(KeyError, match="kd_mask"):  # some features with the mask, some without
        rows.collator(inner)([features[0], bare[1]])
    plain = rows.collator(inner)(bare)  # none with it: an evaluation batch, passed to the task's collator as is
    assert "kd_mask" not in plain and plain["input_ids"].shape[0] == 2


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


def _words(features) -> list[int]:
    return [sum(mask) for mask in features["kd_mask"]]


def test_conll_teacher_and_student_rows_are_one_per_word_and_aligned(make_context):
    """On real CoNLL features: the cached teacher rows are one per (kept) word, and a training batch's student rows
    are the same positions in the same order, whatever the batch composition and padding."""
    from hybridft.distill import IndexedCollator

    ctx, _ = make_context("conll2003")
    features = with_index(ctx.train_features)
    model = ctx.build_model().eval()
    teacher = _teacher(ctx, model, features)
    words = _words(features)
    assert (teacher.offsets[1:] - teacher.offsets[:-1]).tolist() == words
    assert teacher.values.shape[0] == sum(words) < sum(len(ids) for ids in features["input_ids"])
    order = list(reversed(range(len(features))))  # other batches, other padded lengths than the teacher pass
    batch = IndexedCollator(TokenRows().collator(ctx.collator()))([features[i] for i in order])
    with torch.no_grad():
        outputs = model(**{k: v for k, v in batch.items() if k not in ("kd_index", "labels", "kd_mask")})
    pre = teacher.gather(batch["kd_index"])
    student, pre, _, labels = TokenRows().loss_rows(outputs, batch, {"labels": batch["labels"]}, pre, pre)
    assert student.shape == pre.shape == (sum(words), ctx.task.num_labels)
    torch.testing.assert_close(student, pre, atol=1e-5, rtol=1e-5)  # same model: the rows line up one to one
    expected = [label for i in order for label in features[i]["labels"] if label != -100]
    assert labels.tolist() == expected  # the first-subword labels, none ignored


def test_conll_distillation_with_unlabelled_features_distils_every_word(make_context, monkeypatch):
    """Through `fit_distillation` (the Trainer's column filter, the collators, compute_loss): one KD row per word,
    unlabelled features included (label -100, still distilled), and no model forward ever sees ``kd_mask``."""
    from datasets import concatenate_datasets

    import hybridft.distill as distill
    import hybridft.methods.distillation as distillation

    ctx, _ = make_context("conll2003")
    labelled = ctx.train_features.select(range(8))
    extra = ctx.train_features.select(range(8, 12)).map(TokenRows().unlabelled)
    features = with_index(concatenate_datasets([labelled, extra.cast(labelled.features)]))
    assert all(set(labels) == {-100} for labels in features["labels"][8:]) and all(_words(features))
    calls, real = [], distill.loss_for("token")

    def recording(student, pre, fine, labels, **kwargs):
        calls.append((student.shape[0], pre.shape[0], fine.shape[0], labels.clone()))
        return real(student, pre, fine, labels, **kwargs)

    monkeypatch.setattr(distillation, "loss_for", lambda kind: recording)
    student = ctx.build_model()
    seen_kwargs = set()
    student.register_forward_pre_hook(lambda module, args, kwargs: seen_kwargs.update(kwargs), with_kwargs=True)
    teacher = _teacher(ctx, ctx.build_model(), features)
    spec = TrainSpec(learning_rate=1e-3, epochs=1, batch_size=len(features), seed=2)  # one batch: every feature
    result = _distill_fit(
        ctx, student, features, spec, teacher, {"alpha": 0.0, "beta": 1.0, "gamma": 1.0, "temperature": 2.0}
    )
    assert result.training_loss > 0 and len(calls) == 1
    n_student, n_pre, n_fine, labels = calls[0]
    assert n_student == n_pre == n_fine == sum(_words(features))
    assert int((labels == -100).sum()) == sum(_words(extra))  # the unlabelled features' words, distilled only
    assert bool((labels[labels != -100] >= 0).all()) and int((labels != -100).sum()) == sum(_words(labelled))
    assert "input_ids" in seen_kwargs and "kd_mask" not in seen_kwargs and "kd_index" not in seen_kwargs


@pytest.mark.parametrize("remove_unused_columns", [True, False])
def test_plain_training_and_predict_ignore_the_kd_mask_column(make_context, remove_unused_columns):
    """Plain `fit` and `predict` on CoNLL features that carry ``kd_mask``: the Trainer's column filter or the task
    collator keeps it away from the model."""
    from hybridft.fitting import predict

    ctx, data = make_context("conll2003")
    assert "kd_mask" in ctx.train_features.column_names and "kd_mask" in data.eval_features.column_names
    model = ctx.build_model()
    spec = TrainSpec(learning_rate=1e-3, epochs=1, batch_size=8, seed=4)
    overrides = {"remove_unused_columns": remove_unused_columns}
    result = fit(
        model,
        ctx.train_features,
        ctx.collator(),
        spec,
        output_dir=ctx.work_dir / "plain",
        progress=False,
        args_overrides=overrides,
    )
    assert result.training_loss > 0
    features = data.eval_features
    logits = predict(model, features, ctx.collator(), batch_size=16, output_dir=ctx.work_dir / "p", progress=False)
    assert logits.shape[:1] == (len(features),) and logits.shape[2] == ctx.task.num_labels
    scores = ctx.task.compute_metrics(logits, features, data.eval_examples)
    assert 0.0 <= scores["f1"] <= 1.0


def test_the_bench_distils_through_the_public_trainer(make_context, monkeypatch):
    """One distillation path: a bench hybrid run trains through `HybridTrainer`, handed its prepared teachers."""
    from bench.methods import get_method
    from hybridft.trainer import HybridTrainer

    built = []
    original = HybridTrainer.__init__

    def spy(self, *args, **kwargs):
        built.append(kwargs.get("prepared") is not None)
        original(self, *args, **kwargs)

    monkeypatch.setattr(HybridTrainer, "__init__", spy)
    ctx, _ = make_context("sst2", "hybrid")
    method = get_method("hybrid")
    trained = method.train(ctx, method.make_config())
    assert built == [True]
    assert [f.stage for f in trained.fits][-2:] == ["teacher_logits", "hybrid"]
