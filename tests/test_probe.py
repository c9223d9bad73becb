"""The convex linear probe (`hybridft.probe`): solvers against independent float64 references, the features and rows
against the model's own forward, the choice of λ, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridft.probe import (
    HeadFeatures,
    ProbeSettings,
    fit_logistic,
    fit_probe,
    fit_ridge,
    fit_span,
    head_features,
    probe_head,
)


def _blobs(rng, n, width, classes, scale=1.5):
    centres = rng.normal(size=(classes, width)) * scale
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.normal(size=(n, width)) * rng.uniform(0.5, 3.0, size=width)
    return x, y


def _softmax_objective(w_flat, x, y, classes, l2):
    """Mean CE + (λ/2)·‖W‖² of the multinomial model, W (C, H) and b (C,) flattened; float64 numpy."""
    h = x.shape[1]
    w, b = w_flat[: classes * h].reshape(classes, h), w_flat[classes * h :]
    z = x @ w.T + b
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    n = len(y)
    loss = -logp[np.arange(n), y].mean() + 0.5 * l2 * (w * w).sum()
    g = p.copy()
    g[np.arange(n), y] -= 1
    grad_w = g.T @ x / n + l2 * w
    grad_b = g.mean(axis=0)
    return loss, np.concatenate([grad_w.ravel(), grad_b])


@pytest.mark.parametrize("classes", [3, 5])
def test_logistic_fit_is_the_minimiser_of_its_objective(classes):
    from scipy.optimize import minimize

    rng = np.random.default_rng(classes)
    x, y = _blobs(rng, 240, 7, classes)
    l2 = 0.01
    fit = fit_logistic(x, y, l2, n_classes=classes, max_iter=5000, tol=1e-10)
    assert fit.converged
    # sklearn penalises the weights of the standardised features; on raw features that is a diagonal penalty
    # λ·σ_j², so the reference minimises the same problem in the standardised space and maps back.
    mean, std = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / std
    w_std = fit.weight * std  # back to the standardised space: W_z = W·σ, b_z = b + W·μ
    b_std = fit.bias + fit.weight @ mean
    ours = np.concatenate([w_std.ravel(), b_std])
    loss, grad = _softmax_objective(ours, z, y, classes, l2)
    assert np.abs(grad).max() < 1e-6  # gradient ≈ 0 at the solution
    ref = minimize(_softmax_objective, np.zeros_like(ours), args=(z, y, classes, l2), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 20000})  # fmt: skip
    # the softmax is shift-invariant across classes: compare centred weights and biases
    ref_w, ref_b = ref.x[: classes * 7].reshape(classes, 7), ref.x[classes * 7 :]
    np.testing.assert_allclose(w_std - w_std.mean(0), ref_w - ref_w.mean(0), atol=1e-6)
    np.testing.assert_allclose(b_std - b_std.mean(), ref_b - ref_b.mean(), atol=1e-6)
    assert loss == pytest.approx(ref.fun, abs=1e-9)


def test_binary_logistic_is_sklearns_binary_form_split_symmetrically():
    from scipy.optimize import minimize

    rng = np.random.default_rng(1)
    x, y = _blobs(rng, 300, 5, 2)
    l2 = 0.003
    fit = fit_logistic(x, y, l2, n_classes=2, max_iter=5000, tol=1e-10)
    np.testing.assert_allclose(fit.weight[0], -fit.weight[1])
    mean, std = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / std

    def objective(v):  # mean log-loss of the logit difference + (λ/2)‖w‖², w = W[1] − W[0]
        w, b = v[:-1], v[-1]
        m = z @ w + b
        sign = np.where(y == 1, 1.0, -1.0)
        loss = np.logaddexp(0, -sign * m).mean() + 0.5 * l2 * (w @ w)
        g = -sign / (1 + np.exp(sign * m)) / len(y)
        return loss, np.concatenate([z.T @ g + l2 * w, [g.sum()]])

    ref = minimize(objective, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 20000})  # fmt: skip
    diff = (fit.weight[1] - fit.weight[0]) * std
    np.testing.assert_allclose(diff, ref.x[:-1], atol=1e-6)


def test_ridge_fit_is_the_closed_form():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(150, 6)) * rng.uniform(0.1, 5, size=6) + rng.normal(size=6)
    y = x @ rng.normal(size=6) + rng.normal(size=150) + 3.0
    l2 = 0.05
    fit = fit_ridge(x, y, l2)
    mean, std = x.mean(axis=0), x.std(axis=0)
    z = (x - mean) / std
    zc, yc = z - z.mean(axis=0), y - y.mean()
    n = len(y)
    # mean (y − ŷ)² + λ‖w‖² on standardised features, intercept free: (ZᵀZ + nλI) w = Zᵀy
    w = np.linalg.solve(zc.T @ zc + n * l2 * np.eye(6), zc.T @ yc)
    b = y.mean() - z.mean(axis=0) @ w
    np.testing.assert_allclose(fit.weight[0], w / std, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.bias[0], b - (w / std) @ mean, rtol=1e-9)


def test_span_fit_has_zero_gradient_and_beats_its_start():
    from hybridft.probe import _span_loss

    rng = np.random.default_rng(3)
    lengths = rng.integers(4, 12, size=40)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    x = rng.normal(size=(offsets[-1], 5))
    targets = np.stack([rng.integers(0, n, size=2) for n in lengths])
    for w, lo in enumerate(offsets[:-1]):  # make the answer findable
        x[lo + targets[w, 0], 0] += 3.0
        x[lo + targets[w, 1], 1] += 3.0
    l2 = 0.01
    fit = fit_span(x, offsets, targets, l2, max_iter=500, tol=1e-10)
    assert fit.converged
    mean, std = x.mean(axis=0), x.std(axis=0)
    z = torch.from_numpy((x - mean) / std)
    w = torch.tensor(fit.weight * std, requires_grad=True)
    starts = torch.as_tensor(offsets[:-1])
    loss = _span_loss(w, z, starts, torch.as_tensor(lengths), torch.as_tensor(targets), l2)
    loss.backward()
    assert float(w.grad.abs().max()) < 1e-6
    start = _span_loss(torch.zeros(2, 5, dtype=torch.float64), z, starts, torch.as_tensor(lengths),
                       torch.as_tensor(targets), l2)  # fmt: skip
    assert float(loss.detach()) < float(start) - 0.3


# ---------------------------------------------------------------------------------------------------------------
# On models


def _features(task_name, n=48, seed=0):
    from bench.experiment import RunConfig, prepare_data

    cfg = RunConfig(task=task_name, method="lp", seed=seed, model="tiny-bert", train_size=n, eval_size=8,
                    dev_size=24, shifts=())  # fmt: skip
    return prepare_data(cfg)


@pytest.mark.parametrize("task_name", ["sst2", "stsb", "conll2003"])
def test_probe_rows_are_the_models_own_outputs(task_name):
    """The probe's θ_pre rows (X·Wᵀ + b from the cached features) equal the teacher pass of the fitted model, row
    for row, and unsorted batches give the same rows as length-sorted ones."""
    from hybridft.distill import compute_teacher_logits, rows_for
    from hybridft.models import build_model

    data = _features(task_name)
    model = build_model("tiny-bert", data.task, 0).double()  # float64: padding changes no digit that matters
    collator = data.task.collator(data.tokenizer)
    train = head_features(model, data.train_features, collator, kind=data.task.kind, batch_size=7)
    result = fit_probe(model, train, kind=data.task.kind, dev=None, settings=ProbeSettings(folds=3))
    ref = compute_teacher_logits(model, data.train_features, collator, rows_for(data.task.kind), batch_size=5,
                                 progress=False)  # fmt: skip
    assert torch.equal(ref.offsets, result.logits.offsets)
    # both stored as float32 rows: agree to 1e-5 of the logits' scale
    scale = float(ref.values.abs().max())
    torch.testing.assert_close(result.logits.values, ref.values, atol=1e-5 * max(1.0, scale), rtol=1e-5)
    assert result.selection == "cv:3" and len(result.grid) == len(ProbeSettings().l2_grid)


def test_teacher_pass_sorted_equals_one_by_one():
    """Length-sorted batches restore the features' order: the rows equal a pass of one feature per batch."""
    from hybridft.distill import compute_teacher_logits, rows_for
    from hybridft.models import build_model

    data = _features("conll2003", n=30)
    model = build_model("tiny-bert", data.task, 1)
    collator = data.task.collator(data.tokenizer)
    rows = rows_for("token")
    sorted_rows = compute_teacher_logits(model, data.train_features, collator, rows, batch_size=8, progress=False)
    single = compute_teacher_logits(model, data.train_features, collator, rows, batch_size=1, progress=False)
    assert torch.equal(sorted_rows.offsets, single.offsets)
    torch.testing.assert_close(sorted_rows.values, single.values, atol=1e-5, rtol=1e-5)
    lengths = [len(ids) for ids in data.train_features["input_ids"]]
    assert len(set(lengths)) > 3  # the batches really were reordered


def test_probe_uses_the_dev_split_and_records_its_choice():
    from hybridft.models import build_model

    data = _features("sst2")
    model = build_model("tiny-bert", data.task, 0)
    collator = data.task.collator(data.tokenizer)
    train = head_features(model, data.train_features, collator, kind="classification", batch_size=16)
    dev = head_features(model, data.dev.train_features, collator, kind="classification", batch_size=16)
    grid = (1e-3, 1e-1, 10.0)
    result = fit_probe(model, train, kind="classification", dev=dev, settings=ProbeSettings(l2_grid=grid))
    assert result.selection == "dev"
    assert [g["l2"] for g in result.grid] == list(grid)
    assert result.l2 == min(result.grid, key=lambda g: g["loss"])["l2"]
    assert 0.0 <= result.majority <= 1.0


def test_probe_features_run_in_eval_mode_and_leave_the_mode():
    from hybridft.models import build_model

    data = _features("sst2", n=24)
    model = build_model("tiny-bert", data.task, 0)
    model.train()
    collator = data.task.collator(data.tokenizer)
    a = head_features(model, data.train_features, collator, kind="classification", batch_size=8)
    b = head_features(model, data.train_features, collator, kind="classification", batch_size=3)
    torch.testing.assert_close(a.values, b.values, atol=1e-5, rtol=1e-5)  # no dropout noise
    assert model.training


# ---------------------------------------------------------------------------------------------------------------
# Heads


def test_roberta_style_head_gets_an_identity_hidden_layer():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, num_labels=3)  # fmt: skip
    model = RobertaForSequenceClassification(config)
    head = probe_head(model)
    assert head.name == "classifier.out_proj" and head.hidden[0] == "classifier.dense"


def test_a_head_the_probe_cannot_fit_is_refused_naming_its_modules():
    class Odd(torch.nn.Module):
        base_model_prefix = "enc"

        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Linear(4, 4)
            self.head = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))

    with pytest.raises(ValueError, match=r"head \(Sequential\)"):
        probe_head(Odd())


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def _head_features(values, labels, offsets=None):
    values = torch.as_tensor(values, dtype=torch.float32)
    if offsets is None:
        offsets = torch.arange(values.shape[0] + 1)
    return HeadFeatures(values, torch.as_tensor(offsets), np.asarray(labels), tokens=0, time_s=0.0)


def _bert(num_labels=2):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, num_labels=num_labels)  # fmt: skip
    return BertForSequenceClassification(config)


def test_single_class_rows_are_refused_naming_the_label_column():
    feats = _head_features(np.random.default_rng(0).normal(size=(30, 8)), [1] * 30)
    with pytest.raises(ValueError, match=r"single class.*'labels'"):
        fit_probe(_bert(), feats, kind="classification")


def test_too_few_rows_per_fold_is_an_error_naming_the_fold_count():
    rng = np.random.default_rng(0)
    feats = _head_features(rng.normal(size=(8, 8)), [0, 1, 2, 3, 4, 0, 1, 2])
    with pytest.raises(ValueError, match=r"3-fold cross-validation.*ProbeSettings.folds"):
        fit_probe(_bert(num_labels=5), feats, kind="classification")


def test_too_small_a_dev_split_is_an_error_naming_dev_size():
    rng = np.random.default_rng(0)
    train = _head_features(rng.normal(size=(40, 8)), rng.integers(0, 5, 40))
    dev = _head_features(rng.normal(size=(3, 8)), [0, 1, 2])
    with pytest.raises(ValueError, match="dev_size"):
        fit_probe(_bert(num_labels=5), train, kind="classification", dev=dev)


def test_nan_features_are_an_error_naming_the_layer():
    from hybridft.models import build_model

    data = _features("sst2", n=16)
    model = build_model("tiny-bert", data.task, 0)
    with torch.no_grad():
        model.bert.pooler.dense.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"'classifier'.*NaN or inf"):
        head_features(model, data.train_features, data.task.collator(data.tokenizer), kind="classification",
                      batch_size=8)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"l2_grid": ()}, "l2_grid must be a non-empty list"),
        ({"l2_grid": (0.1, -1.0)}, "finite numbers > 0"),
        ({"folds": 1}, "folds must be an integer >= 2"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1"),
        ({"tol": 0.0}, "tol must be a positive"),
    ],
)
def test_bad_settings_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProbeSettings(**kwargs)


def test_removed_knobs_name_their_replacement():
    from bench.methods import get_method

    for method in ("hybrid", "wise_ft", "lp_ft"):
        with pytest.raises(ValueError, match=r"lp_learning_rate was removed.*lp_l2_grid"):
            get_method(method).make_config({"lp_learning_rate": 1e-3})
        with pytest.raises(ValueError, match=r"lp_epochs was removed.*lp_l2_grid"):
            get_method(method).make_config({"lp_epochs": 2})
    with pytest.raises(ValueError, match="lp_weight_decay was removed"):
        get_method("hybrid").make_config({"lp_weight_decay": 0.1})
    with pytest.raises(ValueError, match="no learning rate"):
        get_method("lp").make_config({}, learning_rate=1e-3)
    with pytest.raises(ValueError, match=r"HybridConfig.lp_folds must be an integer >= 2"):
        get_method("hybrid").make_config({"lp_folds": 1})


def test_the_probe_never_chooses_on_the_split_that_scores_the_run(tmp_path):
    """A run scored on its dev split (a learning-rate sweep) has the probe choose λ by cross-validation instead."""
    import dataclasses

    from bench.experiment import RunConfig, prepare_data, train_context

    cfg = RunConfig(task="sst2", method="lp", seed=0, model="tiny-bert", train_size=24, eval_size=8, dev_size=16,
                    shifts=())  # fmt: skip
    scored_on_eval = train_context(cfg, prepare_data(cfg), tmp_path, tmp_path, False)
    assert scored_on_eval.dev_features is not None and len(scored_on_eval.dev_features) == 16
    sweep = dataclasses.replace(cfg, eval_on="dev")
    assert train_context(sweep, prepare_data(sweep), tmp_path, tmp_path, False).dev_features is None


def test_teacher_scores_are_computed_once_per_teacher_and_subset(tmp_path, monkeypatch):
    """Methods of one seed share their teachers: the second run's scores come from the first's, and another
    teacher (other weights) is scored anew."""
    import bench.teacher_scores as teacher_scores
    from bench.experiment import RunConfig, prepare_data
    from bench.teacher_scores import bench_teacher_scores
    from hybridft.models import build_model
    from hybridft.teachers import Teachers

    cfg = RunConfig(task="sst2", method="hybrid", seed=0, model="tiny-bert", train_size=24, eval_size=8, dev_size=16,
                    shifts=())  # fmt: skip
    data = prepare_data(cfg)
    calls = []
    real = teacher_scores.score
    monkeypatch.setattr(teacher_scores, "score", lambda *a, **k: calls.append(1) or real(*a, **k))
    pre, fine = build_model("tiny-bert", data.task, 11), build_model("tiny-bert", data.task, 12)
    first = bench_teacher_scores(Teachers(pre, fine, []), data, cfg, tmp_path, False)
    assert len(calls) == 4  # two teachers × (eval, dev)
    assert bench_teacher_scores(Teachers(pre, fine, []), data, cfg, tmp_path, False) == first
    assert len(calls) == 4
    other = build_model("tiny-bert", data.task, 13)
    bench_teacher_scores(Teachers(other, fine, []), data, cfg, tmp_path, False)
    assert len(calls) == 6
    assert first["pre"]["dev_source"] == "dev" and first["pre"]["majority"] is not None


def test_large_qa_sets_are_fit_on_a_seeded_subsample_of_windows():
    from transformers import BertConfig, BertForQuestionAnswering

    config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16)  # fmt: skip
    rng = np.random.default_rng(4)
    lengths = rng.integers(5, 10, size=30)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    labels = np.stack([rng.integers(0, n, size=2) for n in lengths])
    feats = _head_features(rng.normal(size=(offsets[-1], 8)), labels, offsets)
    settings = ProbeSettings(max_qa_windows=10, folds=2)
    first = fit_probe(BertForQuestionAnswering(config), feats, kind="qa", settings=settings)
    second = fit_probe(BertForQuestionAnswering(config), feats, kind="qa", settings=settings)
    assert (first.train_rows, first.fit_rows) == (30, 10)
    assert first.l2 == second.l2 and first.train_loss == second.train_loss  # the same seeded draw
    assert first.logits.values.shape == (offsets[-1], 2)  # θ_pre's rows still cover every window
