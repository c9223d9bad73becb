"""The hybrid family on a causal LM: θ_pre is the pretrained LM, θ_fine its full fine-tune (the cached "ft" stage
`plain` shares), and the student distils from both on the response tokens (`hybridft.lm_distill`)."""

from __future__ import annotations

import dataclasses

from hybridft.distill import with_index
from hybridft.lm_distill import LmHeadLoss, LmRows, output_head, response_fraction, student_flops, teacher_hidden_cost
from hybridft.methods.base import Trained
from hybridft.methods.distillation import fit_distillation
from hybridft.methods.stages import cached_teacher_passes, teachers
from hybridft.models import count_parameters
from hybridft.teachers import assign_teachers, needed_teachers


def train_lm_hybrid(method, ctx, config):
    """The hybrid family on a causal LM (module docstring); ``method`` is the registered `Hybrid` subclass."""
    if method.output_mix:
        raise ValueError(
            f"{method.name} mixes outputs over the vocabulary at inference; it is not built for causal LMs "
            "(use hybrid, kd_pre or kd_fine)"
        )
    if config.unlabeled_split is not None:
        raise ValueError("unlabeled_split does not apply to a causal-LM task: its distillation rows are its labels")
    pair = teachers(ctx, config)
    features = with_index(ctx.train_features)
    rows = LmRows()
    rows_n, tokens_n = response_fraction(features)
    # A teacher whose weight is 0 (kd_pre, kd_fine) is not run; the other's rows stand in, multiplied by 0.
    need = {"need_pre": config.beta > 0, "need_fine": config.gamma > 0}
    needed = needed_teachers(pair.pre, pair.fine, **need)
    states, seconds = cached_teacher_passes(ctx, features, rows, needed)
    teacher_cost = teacher_hidden_cost(needed[0], len(features), tokens_n, len(needed), seconds)
    pre_hidden, fine_hidden = assign_teachers(states, **need)
    pre_weight, fine_weight = assign_teachers([output_head(m).weight.detach().clone() for m in needed], **need)
    student = method.initial_student(pair, config)
    pair.pre = pair.fine = None  # the heads are all the loss needs of the teachers
    for param in student.parameters():
        param.requires_grad_(True)
    spec = ctx.spec(config.learning_rate, weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio)
    result = fit_distillation(
        student,
        features,
        ctx.collator(),
        spec,
        kind="causal_lm",
        pre_logits=pre_hidden,
        fine_logits=fine_hidden,
        loss_kwargs={"alpha": 0.0, **config.loss_kwargs()},
        rows=rows,
        loss_fn=LmHeadLoss(output_head(student), pre_weight, fine_weight),
        **ctx.fit_kwargs(method.name),
    )
    trained_rows = round(result.tokens * rows_n / tokens_n) if tokens_n else 0
    result = dataclasses.replace(result, flops=student_flops(student, result.tokens, trained_rows))
    trainable, total = count_parameters(student)
    hidden = pre_hidden.values.shape[1]
    extra = {
        "teacher_cache_bytes_per_token": 2 * hidden * pre_hidden.values.element_size(),
        "teacher_cache_rows": int(pre_hidden.values.shape[0]),
        "student_loss_rows": trained_rows,
    }
    return Trained(model=student, fits=[*pair.fits, teacher_cost, result], trainable_params=trainable,
                   total_params=total, extra=extra)  # fmt: skip
