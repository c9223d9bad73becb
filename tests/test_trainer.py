"""HybridTrainer (hybridft.trainer): the public trainer, on tiny random models and real rows of the offline data.

The references are independent of the trainer: the weight mix in float64 from the models' own state dicts, the loss
in float64 from the student's and the teachers' own forward passes, cross-entropy and KL written out.
"""

from __future__ import annotations

import copy

import pytest
import torch

from bench.tasks import get_task
from hybridft import HybridTrainer, HybridTrainingArguments
from hybridft.distill import IGNORE_INDEX, INDEX_COLUMN, teacher_forward_passes
from hybridft.models import build_model, load_tokenizer

MAX_LENGTH = 32


def _features(task, tokenizer, data_dir, rows: range, max_length: int = MAX_LENGTH):
    raw = task.load(task.train_split, data_dir).select(rows)
    return task.preprocess(raw, tokenizer, max_length=max_length, train=True)


def _args(tmp_path, **overrides):
    fields = dict(output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=8,
                  per_device_eval_batch_size=16, teacher_cache_dir=str(tmp_path / "cache"), report_to=[],
                  disable_tqdm=True, save_strategy="no", use_cpu=True, seed=0)  # fmt: skip
    fields.update(overrides)
    return HybridTrainingArguments(**fields)


@pytest.fixture(scope="module")
def sst2(data_dir):
    task = get_task("sst2")
    tokenizer = load_tokenizer("tiny-bert")
    return task, tokenizer, _features(task, tokenizer, data_dir, range(40))


def _perturbed(model, seed: int, scale: float = 0.05):
    """A copy of ``model`` with every float weight moved by seeded noise: a stand-in θ_fine of the same shape."""
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return other


def _reference_loss(student_logits, pre, fine, labels, *, beta, gamma, temperature, ce_weight):
    """docs/design.md §1 in float64: mean CE over labelled rows + mean over all rows of β·T²·KL(pre‖s) + γ·T²·KL(fine‖s)."""
    s, pre, fine = (t.double() for t in (student_logits, pre, fine))
    labelled = labels != IGNORE_INDEX
    log_s = torch.log_softmax(s, -1)
    ce = -log_s[labelled].gather(1, labels[labelled, None]).sum() / labelled.sum().clamp(min=1)
    log_st = torch.log_softmax(s / temperature, -1)

    def kl(teacher):
        log_t = torch.log_softmax(teacher / temperature, -1)
        return (log_t.exp() * (log_t - log_st)).sum(-1).mean()

    return ce_weight * ce + temperature**2 * (beta * kl(pre) + gamma * kl(fine))


def test_student_starts_at_the_weight_mix_of_the_teachers(sst2, tmp_path, seed):
    task, tokenizer, train = sst2
    model = build_model("tiny-bert", task, 0)
    fine = _perturbed(model, seed)
    trainer = HybridTrainer(model=model, fine_tuned_model=fine, args=_args(tmp_path, alpha=0.3),
                            train_dataset=train, processing_class=tokenizer)  # fmt: skip
    student = trainer.model.state_dict()
    # θ_pre is the model after a linear probe, which moves the head only: its encoder is the model's own.
    for name, value in model.state_dict().items():
        if name.startswith("classifier.") or not value.is_floating_point():
            continue
        expected = 0.3 * value.double() + 0.7 * fine.state_dict()[name].double()
        torch.testing.assert_close(student[name].double(), expected, rtol=0, atol=1e-6, msg=name)
    assert [f.stage for f in trainer.teacher_fits] == ["lp", "teacher_logits"]
    assert trainer.teacher_provenance["fine"].startswith("given: a BertForSequenceClassification")


def test_loss_on_a_batch_matches_the_float64_reference(sst2, tmp_path):
    task, tokenizer, train = sst2
    model = build_model("tiny-bert", task, 1)
    fine = _perturbed(model, 5, scale=0.2)
    kw = dict(beta=0.7, gamma=1.3, temperature=1.5, ce_weight=0.8)
    trainer = HybridTrainer(model=model, fine_tuned_model=fine, args=_args(tmp_path, alpha=0.5, **kw),
                            train_dataset=train, processing_class=tokenizer)  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    student = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, batch)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        fine_logits = fine.eval()(**inputs).logits
        ours = student(**inputs).logits
    # θ_fine's cached rows are its own logits on these examples.
    torch.testing.assert_close(trainer.fine_logits.gather(batch[INDEX_COLUMN]), fine_logits, rtol=1e-5, atol=1e-5)
    pre_rows = trainer.pre_logits.gather(batch[INDEX_COLUMN])
    expected = _reference_loss(ours, pre_rows, fine_logits, batch["labels"], **kw)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_built_teachers_are_cached_and_reused(sst2, tmp_path):
    task, tokenizer, train = sst2
    args = _args(tmp_path)
    first = HybridTrainer(model=build_model("tiny-bert", task, 2), args=args, train_dataset=train,
                          processing_class=tokenizer)  # fmt: skip
    assert [f.stage for f in first.teacher_fits] == ["lp", "lp_ft", "teacher_logits"]
    passes = teacher_forward_passes()
    stages = sorted(p.name for p in (tmp_path / "cache" / "stages").iterdir())
    second = HybridTrainer(model=build_model("tiny-bert", task, 2), args=args, train_dataset=train,
                           processing_class=tokenizer)  # fmt: skip
    assert teacher_forward_passes() == passes  # the teachers' rows came from the cache
    assert sorted(p.name for p in (tmp_path / "cache" / "stages").iterdir()) == stages
    assert [f.to_dict() for f in second.teacher_fits[:2]] == [f.to_dict() for f in first.teacher_fits[:2]]
    torch.testing.assert_close(second.pre_logits.values, first.pre_logits.values, rtol=0, atol=0)
    # another seed draws another head for the pretrained model: new stages
    HybridTrainer(model=build_model("tiny-bert", task, 3), args=args, train_dataset=train, processing_class=tokenizer)
    assert len(list((tmp_path / "cache" / "stages").iterdir())) == len(stages) + 2


def test_unlabeled_rows_change_the_kl_terms_and_leave_the_cross_entropy(sst2, data_dir, tmp_path):
    task, tokenizer, train = sst2
    extra = _features(task, tokenizer, data_dir, range(100, 124)).remove_columns("labels")
    model = build_model("tiny-bert", task, 4)
    fine = _perturbed(model, 9, scale=0.2)
    trainer = HybridTrainer(model=model, fine_tuned_model=fine, args=_args(tmp_path), train_dataset=train,
                            unlabeled_dataset=extra, processing_class=tokenizer)  # fmt: skip
    features = trainer.train_dataset
    assert len(features) == len(train) + len(extra) == len(trainer.pre_logits)
    assert features["labels"][len(train):] == [IGNORE_INDEX] * len(extra)  # fmt: skip
    assert features["labels"][: len(train)] == train["labels"]
    collate = trainer.data_collator
    labelled = collate([features[i] for i in range(8)])
    mixed = collate([features[i] for i in [*range(8), *range(len(train), len(train) + 8)]])
    student = trainer.model.eval()

    def loss(batch, **weights):
        trainer.loss_kwargs.update(weights)
        with torch.no_grad():
            return float(trainer.compute_loss(student, batch))

    ce_only = dict(beta=0.0, gamma=0.0, ce_weight=1.0)
    assert loss(mixed, **ce_only) == pytest.approx(loss(labelled, **ce_only), rel=1e-6)
    kl_only = dict(beta=1.0, gamma=1.0, ce_weight=0.0)
    assert loss(mixed, **kl_only) != pytest.approx(loss(labelled, **kl_only), rel=1e-3)


def test_trains_and_evaluates_with_its_own_collator(sst2, tmp_path):
    task, tokenizer, train = sst2
    trainer = HybridTrainer(model=build_model("tiny-bert", task, 0), args=_args(tmp_path), train_dataset=train,
                            eval_dataset=train.select(range(12)), processing_class=tokenizer)  # fmt: skip
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    output = trainer.train()
    assert torch.isfinite(torch.tensor(output.training_loss))
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    metrics = trainer.evaluate()
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))  # the model's own loss on labelled batches
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = type(trainer.model).from_pretrained(str(tmp_path / "saved"))
    for name, value in reloaded.state_dict().items():
        torch.testing.assert_close(value, trainer.model.state_dict()[name], rtol=0, atol=0)


@pytest.mark.parametrize("name, rows", [("stsb", range(24)), ("conll2003", range(16))])
def test_regression_and_token_classification(name, rows, data_dir, tmp_path):
    task = get_task(name)
    tokenizer = load_tokenizer("tiny-bert")
    train = _features(task, tokenizer, data_dir, rows)
    if name == "conll2003":
        train = train.remove_columns("kd_mask")  # the trainer derives the rows from the labels
    trainer = HybridTrainer(model=build_model("tiny-bert", task, 0), args=_args(tmp_path), train_dataset=train,
                            processing_class=tokenizer)  # fmt: skip
    expected_rows = len(train) if name == "stsb" else sum(y != IGNORE_INDEX for ex in train["labels"] for y in ex)
    assert trainer.pre_logits.values.shape[0] == expected_rows
    assert torch.isfinite(torch.tensor(trainer.train().training_loss))


def test_causal_lm_caches_hidden_states_not_logits(data_dir, tmp_path):
    task = get_task("sst2_lm")
    tokenizer = load_tokenizer("tiny-llama", task)
    train = _features(task, tokenizer, data_dir, range(12), max_length=96)
    model = build_model("tiny-llama", task, 0)
    trainer = HybridTrainer(model=model, args=_args(tmp_path, per_device_train_batch_size=4), train_dataset=train,
                            processing_class=tokenizer)  # fmt: skip
    assert [f.stage for f in trainer.teacher_fits] == ["ft", "teacher_hidden"]
    assert trainer.pre_logits.values.shape[1] == model.config.hidden_size  # H per row, not the vocabulary
    assert trainer.task_type == "causal_lm"
    assert torch.isfinite(torch.tensor(trainer.train().training_loss))


def test_peft_student_trains_only_its_adapter_and_head(sst2, tmp_path):
    from peft import LoraConfig

    task, tokenizer, train = sst2
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"])
    trainer = HybridTrainer(model=build_model("tiny-bert", task, 0), args=_args(tmp_path), train_dataset=train,
                            processing_class=tokenizer, peft_config=config)  # fmt: skip
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    assert torch.isfinite(torch.tensor(trainer.train().training_loss))


def test_task_type_is_inferred_and_can_be_overridden(sst2, tmp_path):
    from hybridft.trainer import infer_task_type

    assert infer_task_type(build_model("tiny-bert", get_task("stsb"), 0)) == "regression"
    assert infer_task_type(build_model("tiny-bert", get_task("conll2003"), 0)) == "token"
    assert infer_task_type(build_model("tiny-bert", get_task("squad_devsplit"), 0)) == "qa"
    with pytest.raises(ValueError, match="cannot infer the task type of a Linear"):
        infer_task_type(torch.nn.Linear(2, 2))
    task, tokenizer, train = sst2
    with pytest.raises(ValueError, match="has no column 'start_positions'"):
        HybridTrainer(model=build_model("tiny-bert", task, 0), args=_args(tmp_path, task_type="qa"),
                      train_dataset=train, processing_class=tokenizer)  # fmt: skip


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"alpha": 1.5}, "alpha must be in"),
        ({"beta": -1.0}, "HybridTrainingArguments.beta must be >= 0"),
        ({"temperature": 0.0}, "HybridTrainingArguments.temperature must be > 0"),
        ({"loss_backend": "cuda"}, "loss_backend must be one of"),
        ({"task_type": "ranking"}, "task_type must be None or one of"),
        ({"ft_epochs": 0.0}, r"HybridTrainingArguments.ft_epochs must be None \(the training epochs\) or > 0"),
        ({"lp_weight_decay": 0.1}, "HybridTrainingArguments.lp_weight_decay was removed.*lp_l2_grid"),
        ({"lp_learning_rate": 1e-3}, "HybridTrainingArguments.lp_learning_rate was removed.*convex solver"),
        ({"lp_epochs": 2.0}, "HybridTrainingArguments.lp_epochs was removed"),
        ({"lp_l2_grid": [0.1, -1.0]}, "HybridTrainingArguments.lp_l2_grid must hold finite numbers > 0"),
        ({"lp_folds": 1}, "HybridTrainingArguments.lp_folds must be an integer >= 2"),
    ],
)
def test_bad_arguments_name_the_field(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _args(tmp_path, **overrides)


def test_bad_inputs_are_refused_by_name(sst2, data_dir, tmp_path):
    from transformers import TrainingArguments

    task, tokenizer, train = sst2
    model = build_model("tiny-bert", task, 0)
    args = _args(tmp_path)
    with pytest.raises(TypeError, match="args must be a HybridTrainingArguments, got TrainingArguments"):
        HybridTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path)), train_dataset=train,
                      processing_class=tokenizer)  # fmt: skip
    with pytest.raises(ValueError, match="train_dataset is empty"):
        HybridTrainer(model=model, args=args, train_dataset=train.select([]), processing_class=tokenizer)
    with pytest.raises(ValueError, match=r"train_dataset has no column 'labels'.*columns: input_ids"):
        HybridTrainer(model=model, args=args, train_dataset=train.remove_columns("labels"), processing_class=tokenizer)
    with pytest.raises(ValueError, match="processing_class="):
        HybridTrainer(model=model, args=args, train_dataset=train)
    other = build_model("tiny-bert", get_task("mnli"), 0)  # three labels: another head shape
    with pytest.raises(ValueError, match=r"classifier\.weight"):
        HybridTrainer(model=model, fine_tuned_model=other, args=args, train_dataset=train, processing_class=tokenizer)
    extra = _features(task, tokenizer, data_dir, range(100, 104)).remove_columns("attention_mask")
    with pytest.raises(ValueError, match="unlabelled inputs have no column 'attention_mask'"):
        HybridTrainer(model=model, fine_tuned_model=_perturbed(model, 1), args=args, train_dataset=train,
                      unlabeled_dataset=extra, processing_class=tokenizer)  # fmt: skip


def test_public_names_are_exported_lazily():
    import subprocess
    import sys

    code = (
        "import sys, hybridft; assert 'transformers' not in sys.modules; "
        "from hybridft import HybridTrainer, HybridTrainingArguments; "
        "from hybridft.trainer import HybridTrainer as T; assert HybridTrainer is T; "
        "assert HybridTrainingArguments.__mro__[1].__name__ == 'TrainingArguments'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    import hybridft

    with pytest.raises(AttributeError, match="has no attribute 'HybridTrainr'"):
        hybridft.HybridTrainr  # noqa: B018


def test_teacher_scores_are_reported_with_its_own_metrics(sst2, tmp_path):
    """θ_pre's dev score is the probe's cross-validated accuracy beside the trivial baseline of the same folds; eval
    is each teacher's compute_metrics on eval_dataset (the metric_for_best_model)."""
    import numpy as np

    task, tokenizer, train = sst2
    seen = []

    def metrics(p):
        seen.append(p)
        return {"acc": float((np.asarray(p.predictions).argmax(-1) == p.label_ids).mean())}

    trainer = HybridTrainer(model=build_model("tiny-bert", task, 0), args=_args(tmp_path, metric_for_best_model="acc"),
                            train_dataset=train, eval_dataset=train.select(range(24)), processing_class=tokenizer,
                            compute_metrics=metrics)  # fmt: skip
    scores = trainer.teacher_scores
    probe = trainer.teacher_provenance["lp"]["probe"]
    assert scores["pre"]["dev"] == probe["held_out_score"] and scores["pre"]["dev_source"] == "cv:3"
    assert scores["pre"]["majority"] == probe["majority"]
    assert len(seen) == 2  # one evaluation per teacher
    for name, p in zip(("pre", "fine"), seen, strict=True):
        expected = float((np.asarray(p.predictions).argmax(-1) == np.asarray(train["labels"][:24])).mean())
        assert scores[name]["eval"] == pytest.approx(expected)
        assert scores[name]["eval_metrics"]["acc"] == pytest.approx(expected)
        assert "loss" in scores[name]["eval_metrics"]
    assert scores["fine"]["dev"] is None  # θ_fine has no held-out score without a dev split


def test_a_weak_pretrained_teacher_is_logged_not_warned(caplog):
    import logging
    import warnings

    from hybridft.teacher_quality import is_weak, warn_if_weak

    weak = {"pre": {"dev": 0.5, "majority": 0.55, "dev_source": "cv:3"}, "fine": None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a `warnings` warning would raise here
        with caplog.at_level(logging.WARNING, logger="hybridft"):
            assert warn_if_weak(weak, "HybridTrainer") is True
    assert "at or below the majority baseline 0.5500" in caplog.text
    caplog.clear()
    assert warn_if_weak({"pre": {"dev": 0.6, "majority": 0.55, "dev_source": "dev"}}, "x") is False
    assert not caplog.text
    assert is_weak({"dev": None, "majority": 0.5}) is None and is_weak(None) is None
