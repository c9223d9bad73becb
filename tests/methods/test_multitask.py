"""Multi-task joint training: the routing forward, the shared encoder, the joint data, both methods and their cached
joint stages, and the argument checks."""

from __future__ import annotations

import pytest
import torch

from bench.experiment import RunConfig, prepare_data, run_experiment, train_context
from bench.joint_tasks import TASK_COLUMN, MultiTaskModel, MultiTaskRows, joint_features
from bench.methods import get_method

TASKS = ("sst2", "mrpc")


def _run(task: str, method: str, data_dir, **overrides) -> RunConfig:
    fields = dict(task=task, method=method, seed=3, model="tiny-bert", train_size=32, eval_size=16, max_length=64,
                  epochs=1.0, batch_size=8, eval_batch_size=16, shifts=(), data_dir=str(data_dir))  # fmt: skip
    fields.update(overrides)
    return RunConfig(**fields)


def _context(task: str, method: str, data_dir, tmp_path, cache):
    cfg = _run(task, method, data_dir)
    data = prepare_data(cfg)
    return train_context(cfg, data, tmp_path / f"work-{task}", cache, progress=False), data


def _stage_dirs(cache) -> list[str]:
    return sorted(p.name.split("-")[0] for p in (cache / "stages").iterdir() if p.is_dir() and p.name.startswith("mt_"))


def _model(seed: int = 3) -> MultiTaskModel:
    model = MultiTaskModel.build("tiny-bert", TASKS, seed)
    with torch.no_grad():  # the heads start equal (one seed, one shape): make them differ so routing shows
        model.models["mrpc"].classifier.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(7))
    return model


def _batch(n: int, generator: torch.Generator) -> dict:
    lengths = torch.randint(3, 12, (n,), generator=generator)
    ids = torch.randint(1000, 20000, (n, 12), generator=generator)
    mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    return {
        "input_ids": ids * mask,
        "attention_mask": mask,
        "token_type_ids": torch.randint(0, 2, (n, 12), generator=generator) * mask,
        "labels": torch.randint(0, 2, (n,), generator=generator),
    }


def test_routing_forward_equals_each_task_models_own_forward(seed):
    model = _model().double().eval()
    generator = torch.Generator().manual_seed(seed)
    batch = _batch(9, generator)
    task_ids = torch.tensor([1, 0, 0, 1, 1, 0, 1, 1, 0])  # mixed, in shuffled task order
    batch["labels"][2] = -100  # ignored, as in HF's loss
    with torch.no_grad():
        out = model(**batch, task_ids=task_ids)
        assert out.logits.shape == (9, 2) and out.logits.dtype == torch.float64
        for index, name in enumerate(TASKS):
            rows = (task_ids == index).nonzero(as_tuple=True)[0]
            own = model.models[name](**{k: v[rows] for k, v in batch.items() if k != "labels"}).logits
            torch.testing.assert_close(out.logits[rows], own, rtol=1e-12, atol=1e-12)
        kept = batch["labels"] != -100
        expected = torch.nn.functional.cross_entropy(out.logits[kept], batch["labels"][kept])
        torch.testing.assert_close(out.loss, expected, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(out.logits, model.models["sst2"](**{k: v for k, v in batch.items()
                                                                         if k != "labels"}).logits)  # fmt: skip
        only_mrpc = model(**batch, task_ids=torch.ones(9, dtype=torch.long)).logits  # one task present
        torch.testing.assert_close(only_mrpc[task_ids == 1], out.logits[task_ids == 1], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="needs task_ids"):
        model(**batch)
    with pytest.raises(ValueError, match="holds 2, not a task index"):
        model(**batch, task_ids=torch.full((9,), 2))


def test_the_encoder_is_shared_and_task_models_are_standalone_copies(seed):
    model = _model()
    sst2, mrpc = model.models["sst2"], model.models["mrpc"]
    assert sst2.bert is mrpc.bert is model.encoder is model.base_model
    for (name, a), (_, b) in zip(sst2.bert.named_parameters(), mrpc.bert.named_parameters(), strict=True):
        assert a is b, name
    before = {k: v.clone() for k, v in sst2.bert.state_dict().items()}
    batch = _batch(6, torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    model(**batch, task_ids=torch.tensor([0, 1, 1, 0, 1, 0])).loss.backward()
    optimizer.step()
    copies = [model.task_model(name) for name in TASKS]
    assert all(type(c).__name__ == "BertForSequenceClassification" for c in copies)
    states = [c.bert.state_dict() for c in copies]
    moved = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, states[0][k])]
    assert moved  # the step moved the shared encoder ...
    for key, value in states[0].items():  # ... and both task models see it
        assert torch.equal(value, states[1][key]), key
    assert copies[0].bert is not copies[1].bert and copies[0].bert is not model.encoder  # standalone
    with pytest.raises(ValueError, match="'rte' is not one of this model's tasks: sst2, mrpc"):
        model.task_model("rte")


def test_joint_features_are_each_tasks_single_task_training_subset(data_dir, tmp_path):
    ctx, data = _context("mrpc", "plain_multitask", data_dir, tmp_path, tmp_path / "cache")
    sst2 = prepare_data(_run("sst2", "plain_multitask", data_dir))
    joint = joint_features(ctx, TASKS)
    assert joint.data_keys == [sst2.data_key, data.data_key]  # in the task list's order, whichever task runs
    assert joint.sizes() == {"sst2": 32, "mrpc": 32}
    ids = joint.features[TASK_COLUMN]
    assert ids == [0] * 32 + [1] * 32
    assert joint.features["input_ids"][:32] == sst2.train_features["input_ids"]
    assert joint.features["input_ids"][32:] == data.train_features["input_ids"]
    assert joint.features["labels"][32:] == data.train_features["labels"]
    # a teacher pass over the joint features routes each row (compute_teacher_logits, MultiTaskRows)
    from hybridft.distill import SequenceRows, compute_teacher_logits

    model = _model()
    routed = compute_teacher_logits(model, joint.features, ctx.collator(), MultiTaskRows(), batch_size=16,
                                    progress=False)  # fmt: skip
    for index, (name, features) in enumerate([("sst2", sst2.train_features), ("mrpc", data.train_features)]):
        own = compute_teacher_logits(model.task_model(name), features, ctx.collator(), SequenceRows(), batch_size=16,
                                     progress=False)  # fmt: skip
        torch.testing.assert_close(routed.values[index * 32 : (index + 1) * 32], own.values, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_plain_multitask_trains_once_for_every_task_of_the_list(data_dir, tmp_path):
    cache = tmp_path / "cache"
    first = run_experiment(_run("sst2", "plain_multitask", data_dir), work_dir=tmp_path / "a", cache_dir=cache,
                           progress=False)  # fmt: skip
    assert first["status"] == "ok" and _stage_dirs(cache) == ["mt_plain"]
    second = run_experiment(_run("mrpc", "plain_multitask", data_dir), work_dir=tmp_path / "b", cache_dir=cache,
                            progress=False)  # fmt: skip
    assert _stage_dirs(cache) == ["mt_plain"]  # loaded, not trained again
    assert second["status"] == "ok" and second["headline_metric"] == "accuracy"
    for key in ("train_flops", "train_tokens", "optimizer_steps", "train_time_s"):
        assert second[key] == first[key] > 0, key
    assert [s["stage"] for s in first["stages"]] == ["plain_multitask"]
    assert first["stages"][0]["samples"] == 64  # both tasks' 32 rows, one epoch
    assert first["method_extra"] == second["method_extra"]
    assert first["method_extra"]["tasks"] == list(TASKS) and first["method_extra"]["shared_by"] == 2
    assert first["method_extra"]["task_rows"] == {"sst2": 32, "mrpc": 32}
    assert 0 < first["trainable_params"] <= first["total_params"] < first["method_extra"]["joint_total_params"]
    # FLOPs: every token through the encoder and one head, as a single-task model's full fine-tuning pass
    from bench.tasks import get_task
    from hybridft.compute import pass_parameters
    from hybridft.models import build_model

    per_token = pass_parameters(build_model("tiny-bert", get_task("sst2"), 3)).train_flops_per_token
    assert first["train_flops"] == first["train_tokens"] * per_token
    # both task models come out of one joint model: identical encoders, their own heads
    method = get_method("plain_multitask")
    models = {}
    for task in TASKS:
        ctx, _ = _context(task, "plain_multitask", data_dir, tmp_path, cache)
        models[task] = method.train(ctx, method.make_config()).model
    assert _stage_dirs(cache) == ["mt_plain"]
    fresh = build_model("tiny-bert", get_task("sst2"), 3).bert.state_dict()
    states = [models[t].bert.state_dict() for t in TASKS]
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
    assert any(not torch.equal(v, fresh[k]) for k, v in states[0].items())  # the encoder trained
    assert not torch.equal(models["sst2"].classifier.weight, models["mrpc"].classifier.weight)


@pytest.mark.slow
def test_hybrid_multitask_student_starts_at_the_weight_mix_and_is_shared(data_dir, tmp_path, monkeypatch):
    import bench.methods.multitask as module
    from bench.tasks import get_task
    from hybridft.models import build_model

    captured = {}
    real_passes, real_fit = module.teacher_passes, module.fit_distillation

    def passes(models, *args, **kwargs):
        captured["teachers"] = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in models]
        return real_passes(models, *args, **kwargs)

    def fit(student, *args, **kwargs):
        captured["student"] = {k: v.detach().clone() for k, v in student.state_dict().items()}
        captured["fits"] = captured.get("fits", 0) + 1
        return real_fit(student, *args, **kwargs)

    monkeypatch.setattr(module, "teacher_passes", passes)
    monkeypatch.setattr(module, "fit_distillation", fit)
    cache = tmp_path / "cache"
    alpha = 0.3
    args = (("alpha", alpha),)
    first = run_experiment(_run("sst2", "hybrid_multitask", data_dir, method_args=args), work_dir=tmp_path / "a",
                           cache_dir=cache, progress=False)  # fmt: skip
    assert first["status"] == "ok"
    assert [s["stage"] for s in first["stages"]] == ["mt_lp", "mt_lp_ft", "teacher_logits", "hybrid_multitask"]
    assert _stage_dirs(cache) == ["mt_hybrid", "mt_lp", "mt_lp_ft"]
    pre, fine = captured["teachers"]
    student = captured["student"]
    assert pre.keys() == fine.keys() == student.keys()
    for key, value in student.items():
        if not value.is_floating_point():
            continue
        mix = alpha * pre[key].double() + (1 - alpha) * fine[key].double()
        torch.testing.assert_close(value.double(), mix, rtol=1e-6, atol=1e-9, msg=key)
    fresh = build_model("tiny-bert", get_task("sst2"), 3).bert.state_dict()
    for key, value in fresh.items():  # θ_pre: the linear probe left the shared encoder as it was
        assert torch.equal(pre[f"encoder.{key}"], value), key
    assert not torch.equal(pre["models.sst2.classifier.weight"], fine["models.sst2.classifier.weight"])
    second = run_experiment(_run("mrpc", "hybrid_multitask", data_dir, method_args=args), work_dir=tmp_path / "b",
                            cache_dir=cache, progress=False)  # fmt: skip
    assert second["status"] == "ok" and captured["fits"] == 1  # the student stage was loaded, not trained again
    assert _stage_dirs(cache) == ["mt_hybrid", "mt_lp", "mt_lp_ft"]
    assert second["train_flops"] == first["train_flops"] > 0
    assert second["method_extra"]["shared_by"] == 2


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("plain_multitask", {"tasks": ["sst2", "stsb"]}, r"task 'stsb' is a regression task with 1 label\(s\)"),
        ("plain_multitask", {"tasks": ["sst2", "mnli"]}, "'mnli' is a classification task with 3 labels and 'sst2'"),
        ("plain_multitask", {"tasks": ["stsb", "sst2"]}, "'stsb' is a regression task"),
        ("plain_multitask", {"tasks": ["sst2", "conll2003"]}, "task 'conll2003' is a token task"),
        ("hybrid_multitask", {"tasks": ["sst2", "qqqp"]}, "unknown task 'qqqp'; known tasks: cola"),
        ("plain_multitask", {"tasks": ["sst2"]}, "at least two tasks"),
        ("plain_multitask", {"tasks": ["sst2", "sst2"]}, "names 'sst2' twice"),
        ("plain_multitask", {"tasks": "sst2"}, "must be a list of at least two task names"),
        ("hybrid_multitask", {"unlabeled_split": "test"}, "unlabeled_split must be None"),
        ("hybrid_multitask", {"alpha": 1.5}, "alpha must be in"),
        ("hybrid_multitask", {"alpha": "auto"}, "alpha must be a number in"),
    ],
)
def test_bad_arguments_are_refused(method, args, message):
    with pytest.raises((ValueError, TypeError), match=message):
        get_method(method).make_config(args)


def test_task_lists_become_tuples_and_keep_the_hybrid_defaults():
    config = get_method("hybrid_multitask").make_config({"tasks": ["rte", "sst2", "mrpc"]}, learning_rate=3e-5)
    assert config.tasks == ("rte", "sst2", "mrpc") and config.learning_rate == 3e-5
    assert (config.alpha, config.beta, config.gamma, config.temperature) == (0.5, 1.0, 1.0, 2.0)
    assert get_method("plain_multitask").make_config().tasks == TASKS


def test_the_runs_task_must_be_one_of_the_tasks(data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"tasks \['sst2', 'mrpc'\]; the run's task 'rte' is not one of them"):
        run_experiment(_run("rte", "plain_multitask", data_dir), work_dir=tmp_path / "w", cache_dir=tmp_path / "c",
                       progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="does not apply to task 'stsb' of kind 'regression'"):
        run_experiment(_run("stsb", "hybrid_multitask", data_dir), work_dir=tmp_path / "w", cache_dir=tmp_path / "c",
                       progress=False)  # fmt: skip
