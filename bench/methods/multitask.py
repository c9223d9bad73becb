"""Multi-task joint training of one encoder with one head per task: `plain_multitask` and `hybrid_multitask`.

Both train a `bench.joint_tasks.MultiTaskModel` on the joint features of ``tasks`` (each task's training subset as
its single-task run draws it; proportional sampling over their union, see `bench.joint_tasks`) and return the run's
own task's model (the shared encoder and its head) for the normal per-task evaluation.

- `plain_multitask`: every weight of the fresh joint model fine-tuned with plain's recipe (BERT: lr 2e-5, weight
  decay 0.01, 10% warmup) for the run's epochs over the joint features.
- `hybrid_multitask`: the hybrid method on the joint model. θ_pre: a multi-task linear probe (every head trained
  on the frozen shared encoder, kept in eval mode); θ_fine: multi-task LP-FT from it; the student starts at
  θ_mix = α·θ_pre + (1−α)·θ_fine and distils from both teachers (`hybrid_kd_loss`, teacher logits computed once
  by `hybridft.methods.hybrid.teacher_passes` and cached) on the joint features.

Every joint stage is cached (`hybridft.teachers.stored_stage`) under a key of all tasks' data keys, the model spec,
seed, batch size and the stage's settings, so the run of another task of the same list (a benchmark matrix) loads
it instead of training it again. Compute: each run reports the whole joint cost (the joint stages serve every task
of the list; ``method_extra["shared_by"]`` says by how many). A joint stage's FLOPs count each token through the
encoder and one head, as a single-task model's pass (`_row_cost`), not through every task's head.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from bench.joint_tasks import TASK_COLUMN, JointData, MultiTaskModel, MultiTaskRows, check_tasks, joint_features
from bench.methods.matched import pass_with_only
from hybridft.distill import with_index
from hybridft.fitting import FitResult
from hybridft.interpolate import interpolate_models
from hybridft.methods.base import Method, MethodConfig, TrainContext, Trained
from hybridft.methods.distillation import fit_distillation
from hybridft.methods.hybrid import HybridConfig, check_number_alpha
from hybridft.methods.registry import register
from hybridft.models import count_parameters, head_parameter_names
from hybridft.probe import linear_probe_model
from hybridft.teachers import (
    assign_teachers,
    compute_device,
    needed_teachers,
    stored_stage,
    teacher_pass_cost,
    teacher_passes,
    train_all_weights,
)

DEFAULT_TASKS = ("sst2", "mrpc")


def _validate_tasks(config) -> None:
    """``config.tasks`` as a tuple (a list from a TOML/JSON override) of at least two tasks that can share a model."""
    if isinstance(config.tasks, list):
        object.__setattr__(config, "tasks", tuple(config.tasks))
    try:
        object.__setattr__(config, "tasks", check_tasks(config.tasks))
    except ValueError as exc:
        raise ValueError(f"{type(config).__name__}.tasks: {exc}") from None


@dataclass(frozen=True)
class MultiTaskConfig(MethodConfig):
    """Joint full fine-tuning with plain's recipe (the MethodConfig defaults: lr 2e-5, weight decay 0.01, 10% linear
    warmup). ``tasks``: the tasks trained together (classification, one number of labels); the run's task must be
    one of them."""

    tasks: tuple[str, ...] = DEFAULT_TASKS

    def validate(self) -> None:
        super().validate()
        _validate_tasks(self)


@dataclass(frozen=True)
class HybridMultiTaskConfig(HybridConfig):
    """The hybrid method's settings (`HybridConfig`: α, β, γ, T, ce_weight, loss back end, teacher stages) plus
    ``tasks``. α is a number: the hybrid method's other α choices and unlabelled inputs (``unlabeled_split`` /
    ``unlabeled_size``) are not built for the joint model."""

    tasks: tuple[str, ...] = DEFAULT_TASKS

    def validate(self) -> None:
        super().validate()
        _validate_tasks(self)
        check_number_alpha(self, "hybrid_multitask")
        for name in ("unlabeled_split", "unlabeled_size"):
            if getattr(self, name) is not None:
                raise ValueError(f"{type(self).__name__}.{name} must be None: hybrid_multitask distils on the tasks' "
                                 f"training inputs only, got {getattr(self, name)!r}")  # fmt: skip


def base_key(ctx: TrainContext, joint: JointData) -> dict:
    run = ctx.run
    return {"model": run.model, "tasks": list(joint.tasks), "seed": run.seed, "data": joint.data_keys,
            "batch_size": run.batch_size}  # fmt: skip


def _builder(ctx: TrainContext, tasks):
    return lambda: MultiTaskModel.build(ctx.run.model, tasks, ctx.run.seed)


def _row_cost(model: MultiTaskModel, *, heads_only: bool):
    """`PassParameters` of one row's pass: the shared encoder and one task's head (all heads have the same size),
    with the encoder frozen (``heads_only``) or every weight trainable."""
    one = model.models[model.tasks[0]]
    head = set(head_parameter_names(one))
    return pass_with_only(one, lambda name, param: not heads_only or name in head)


def _recounted(result: FitResult, model: MultiTaskModel, *, heads_only: bool) -> FitResult:
    """``result`` with its FLOPs counted per row through one head (`fit` counted every task's head)."""
    return dataclasses.replace(result, flops=float(result.tokens * _row_cost(model, heads_only=heads_only)
                                                   .train_flops_per_token))  # fmt: skip


def _trained(ctx: TrainContext, joint_model: MultiTaskModel, fits: list[FitResult], joint: JointData) -> Trained:
    model = joint_model.task_model(ctx.task.name)
    trainable, total = count_parameters(model)
    joint_trainable, joint_total = count_parameters(joint_model)
    extra = {"tasks": list(joint.tasks), "shared_by": len(joint.tasks), "task_rows": joint.sizes(),
             "joint_trainable_params": joint_trainable, "joint_total_params": joint_total}  # fmt: skip
    return Trained(model=model, fits=fits, trainable_params=trainable, total_params=total, extra=extra)


class MultiTaskMethod(Method):
    """A method trained jointly on its config's ``tasks``: it applies to a task of that list only."""

    task_kinds = ("classification",)

    def applies_to(self, task, config) -> bool:
        return super().applies_to(task, config) and task.name in config.tasks

    def check_run(self, task, config) -> None:
        super().check_run(task, config)
        if task.name not in config.tasks:
            raise ValueError(f"method {self.name!r} trains jointly on tasks {list(config.tasks)}; the run's task "
                             f"{task.name!r} is not one of them (set the method's tasks to include it)")  # fmt: skip


@register
class PlainMultiTask(MultiTaskMethod):
    name = "plain_multitask"
    config_class = MultiTaskConfig

    def train(self, ctx: TrainContext, config: MultiTaskConfig) -> Trained:
        joint = joint_features(ctx, config.tasks)
        spec = ctx.spec(config.learning_rate, weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio)
        key_data = {"stage": "mt_plain", **base_key(ctx, joint), "spec": spec.__dict__}

        def train():
            model = _builder(ctx, joint.tasks)()
            result = train_all_weights(model, joint.features, ctx.collator(), spec, ctx.fit_kwargs(self.name))
            return model, _recounted(result, model, heads_only=False)

        model, result, _ = stored_stage(ctx.cache_dir, "mt_plain", key_data, train, _builder(ctx, joint.tasks))
        return _trained(ctx, model, [result], joint)


def probe_each_task(ctx: TrainContext, model: MultiTaskModel, joint: JointData, settings) -> FitResult:
    """The multi-task θ_pre: one convex probe per task head (`hybridft.probe`) on that task's rows of the joint
    features, through the shared frozen encoder; λ by cross-validation (the joint features have no dev split).
    Returns the summed cost as one FitResult."""
    fits = []
    for index, name in enumerate(model.tasks):
        rows = joint.features.filter(lambda ids, task=index: [i == task for i in ids], input_columns=TASK_COLUMN,
                                     batched=True)  # fmt: skip
        rows = rows.remove_columns(TASK_COLUMN)
        fit, _ = linear_probe_model(model.models[name], rows, ctx.collator(), kind="classification",
                                    batch_size=ctx.run.eval_batch_size, settings=settings, progress=ctx.progress,
                                    device=compute_device(), stage="mt_lp")  # fmt: skip
        fits.append(fit)
    return FitResult(
        train_time_s=sum(f.train_time_s for f in fits),
        samples=sum(f.samples for f in fits),
        training_loss=sum(f.training_loss * f.samples for f in fits) / max(1, sum(f.samples for f in fits)),
        stage="mt_lp",
        forward_tokens=sum(f.forward_tokens for f in fits),
        flops=sum(f.flops for f in fits),
    )


def multitask_teachers(ctx: TrainContext, config: HybridMultiTaskConfig, joint: JointData):
    """θ_pre (multi-task linear probe) and θ_fine (multi-task LP-FT from it), cached stages "mt_lp" and
    "mt_lp_ft". Returns (pre, fine, [lp FitResult, lp_ft FitResult], (lp key, lp_ft key))."""
    build = _builder(ctx, joint.tasks)
    base = base_key(ctx, joint)
    settings = config.probe_settings(ctx.run.seed)

    def train_lp():
        model = build()
        return model, probe_each_task(ctx, model, joint, settings)

    lp_key_data = {"stage": "mt_lp", **base, "probe": settings.key()}
    pre, lp_result, lp_key = stored_stage(ctx.cache_dir, "mt_lp", lp_key_data, train_lp, build)
    ft_spec = ctx.spec(config.ft_learning_rate, config.ft_epochs, weight_decay=config.ft_weight_decay,
                       warmup_ratio=config.ft_warmup_ratio)  # fmt: skip

    def train_ft():
        model = copy.deepcopy(pre)
        result = train_all_weights(model, joint.features, ctx.collator(), ft_spec, ctx.fit_kwargs("mt_lp_ft"))
        return model, _recounted(result, model, heads_only=False)

    ft_key_data = {"stage": "mt_lp_ft", **base, "from": lp_key, "spec": ft_spec.__dict__}
    fine, ft_result, ft_key = stored_stage(ctx.cache_dir, "mt_lp_ft", ft_key_data, train_ft, build)
    for model in (pre, fine):
        for param in model.parameters():
            param.requires_grad_(True)
    return pre, fine, [lp_result, ft_result], (lp_key, ft_key)


@register
class HybridMultiTask(MultiTaskMethod):
    name = "hybrid_multitask"
    config_class = HybridMultiTaskConfig

    def train(self, ctx: TrainContext, config: HybridMultiTaskConfig) -> Trained:
        joint = joint_features(ctx, config.tasks)
        pre, fine, teacher_fits, teacher_keys = multitask_teachers(ctx, config, joint)
        features = with_index(joint.features)
        need = {"need_pre": config.beta > 0, "need_fine": config.gamma > 0}
        needed = needed_teachers(pre, fine, **need)
        computed, seconds = teacher_passes(needed, features, ctx.collator(), MultiTaskRows(),
                                           device=compute_device(), cache_dir=ctx.cache_dir,
                                           key_data={"multitask": joint.data_keys},
                                           batch_size=ctx.run.eval_batch_size, progress=ctx.progress)  # fmt: skip
        pre_logits, fine_logits = assign_teachers(computed, **need)
        # one row's teacher pass runs the shared encoder and one head: a single task model's forward
        teacher_cost = teacher_pass_cost(features, [m.models[m.tasks[0]] for m in needed], seconds)
        spec = ctx.spec(config.learning_rate, weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio)
        loss_kwargs = {"alpha": 0.0, **config.loss_kwargs()}
        key_data = {"stage": "mt_hybrid", **base_key(ctx, joint), "from": list(teacher_keys), "alpha": config.alpha,
                    "loss": loss_kwargs, "spec": spec.__dict__}  # fmt: skip

        def train():
            student = interpolate_models(pre, fine, config.alpha)
            for param in student.parameters():
                param.requires_grad_(True)
            result = fit_distillation(student, features, ctx.collator(), spec, kind="classification",
                                      pre_logits=pre_logits, fine_logits=fine_logits, loss_kwargs=loss_kwargs,
                                      **ctx.fit_kwargs(self.name))  # fmt: skip
            return student, _recounted(result, student, heads_only=False)

        student, result, _ = stored_stage(ctx.cache_dir, "mt_hybrid", key_data, train, _builder(ctx, joint.tasks))
        return _trained(ctx, student, [*teacher_fits, teacher_cost, result], joint)
