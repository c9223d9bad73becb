"""Hybrid fine-tuning of a causal LM: per-response-token dual-teacher distillation through the LM heads.

θ_pre is the pretrained LM (its head already speaks, so there is no linear probe), θ_fine its full fine-tune (the
cached "ft" stage that `plain` shares, `hybridft.methods.stages.full_fine_tune`), and the student starts at
θ_mix = α·θ_pre + (1−α)·θ_fine. It trains on

    ce_weight·CE(z_s, y) + β·T²·KL(p_pre ‖ p_s) + γ·T²·KL(p_fine ‖ p_s)

over the response tokens only (the positions whose next token has a label; prompt tokens carry −100), where
z = h·Wᵀ are the vocabulary logits of each model's final (normed) hidden state h and LM-head weight W. The loss is
`hybridft.hybrid_kd_linear_loss`: no model's logits are ever held over the whole vocabulary.

What is cached (`LmRows`, through `hybridft.distill.cached_teacher_logits`): each teacher's final hidden states at
the response positions of every training feature, once, before training; never its logits. That is
``hidden_size × 4`` bytes per response token per teacher (2,304 B for SmolLM2's 576, so 4,608 B for both), against
``vocab × 4`` = 196,608 B per token per teacher for logits. The two teachers' head weights (V × H each; tied to
their input embeddings) are kept in memory for the loss; the teacher bodies are dropped once the hidden states are
computed.

Compute (`hybridft.compute`, per token, P_body = the weights outside the head, V·H = the head):

- the teacher pass: 2·P_body per token per teacher (only the body runs);
- the student: 6·P_body per token, and per response row 6·V·H (its head: forward, input and weight gradients)
  plus 2·2·V·H (the two teachers' heads, forward only, inside the loss).

Every LM training pass counts its head on the response rows only (`hybridft.compute.training_flops`): `plain` and
the θ_fine stage at 6·P_body per token + 6·V·H per response row, though the Hugging Face loss forms logits at every
position (the prompt positions' logits are thrown away: not useful compute, as padding is not).
"""

from __future__ import annotations

import torch

from hybridft.compute import pass_parameters
from hybridft.fitting import FitResult
from hybridft.linear_loss import hybrid_kd_linear_loss
from hybridft.loss_checks import IGNORE_INDEX


def decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The model's body (``get_decoder()``: LlamaModel for LlamaForCausalLM), which returns final hidden states."""
    getter = getattr(model, "get_decoder", None)
    body = getter() if callable(getter) else None
    if body is None:
        raise ValueError(f"{type(model).__name__} has no get_decoder(): cannot take its final hidden states")
    return body


def output_head(model: torch.nn.Module) -> torch.nn.Linear:
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(f"{type(model).__name__}'s output head is {type(head).__name__}, expected an nn.Linear")
    return head


def response_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, L−1) True at the positions whose next token is a response token (its label is not ignored)."""
    return labels[:, 1:] != IGNORE_INDEX


class LmRows:
    """Distillation rows of a causal LM: one row per response token, the final hidden state at the position before
    it (H values, not V logits); label = that token. See `hybridft.distill` for the row contract."""

    label_columns = ("labels",)
    teacher_columns = ("labels",)  # the teacher pass needs them to find the response positions

    @staticmethod
    def _hidden(model, inputs):
        return decoder(model)(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))

    def teacher_forward(self, model, inputs):
        return self._hidden(model, inputs)

    def student_forward(self, model, inputs):
        return self._hidden(model, inputs)

    def output_rows(self, outputs, batch):
        mask = response_mask(batch["labels"])
        return outputs.last_hidden_state[:, :-1][mask], mask.sum(dim=1).cpu()

    def loss_rows(self, outputs, batch, targets, pre_rows, fine_rows):
        if "labels" not in targets:
            raise KeyError("causal-LM distillation needs the labels column: it marks the response tokens")
        labels = targets["labels"]
        mask = response_mask(labels)
        return outputs.last_hidden_state[:, :-1][mask], pre_rows, fine_rows, labels[:, 1:][mask].long()

    def unlabelled(self, example: dict) -> dict:
        raise ValueError("causal-LM distillation has no unlabelled rows: the response tokens are its labels")


class LmHeadLoss:
    """The loss function of the LM student: `hybrid_kd_linear_loss` of the student's head (a live parameter, read
    at every call) and the two teachers' head weights (constants)."""

    def __init__(self, student_head: torch.nn.Linear, pre_weight: torch.Tensor, fine_weight: torch.Tensor):
        self.student_head = student_head
        self.pre_weight, self.fine_weight = pre_weight.detach(), fine_weight.detach()

    def __call__(self, student, pre, fine, labels=None, **kwargs):
        if self.pre_weight.device != student.device:
            self.pre_weight, self.fine_weight = self.pre_weight.to(student.device), self.fine_weight.to(student.device)
        return hybrid_kd_linear_loss(
            student,
            self.student_head.weight,
            pre,
            self.pre_weight,
            fine,
            self.fine_weight,
            labels,
            student_bias=self.student_head.bias,
            **kwargs,
        )


def response_fraction(features) -> tuple[int, int]:
    """(response rows, non-padding tokens) of LM features: how many positions the student's head runs on."""
    rows = sum(sum(1 for y in labels[1:] if y != IGNORE_INDEX) for labels in features["labels"])
    tokens = sum(len(ids) for ids in features["input_ids"])
    return rows, tokens


def head_and_body(model: torch.nn.Module) -> tuple[int, int]:
    """(V·H of the output head, P_body = every other counted weight) as `hybridft.compute` counts them."""
    head = output_head(model).weight.numel()
    return head, pass_parameters(model).forward - head


def student_flops(model, tokens: int, rows: int) -> float:
    """FLOPs of the student stage (module docstring): 6·P_body per token, 10·V·H per response row."""
    head, body = head_and_body(model)
    return float(6 * body * tokens + (6 + 4) * head * rows)


def lm_matched_epochs(model, features, config, run_epochs: float) -> float:
    """Epochs of plain LM fine-tuning whose FLOPs equal the LM hybrid pipeline's: the θ_fine stage, the teacher
    passes over the body, and the student (module docstring), all on the same features."""
    head, body = head_and_body(model)
    rows, tokens = response_fraction(features)
    full = 6 * body * tokens + 6 * head * rows  # one epoch of plain, its head on the response rows

    def epochs(value):
        return run_epochs if value is None else value

    passes = 2 if config.teacher_passes is None else config.teacher_passes  # θ_pre and θ_fine: an LM has no probe
    teacher = passes * 2 * body * tokens
    student = epochs(config.student_epochs) * (6 * body * tokens + 10 * head * rows)
    return epochs(config.ft_epochs) + (teacher + student) / full


def teacher_hidden_cost(model, n_features: int, tokens: int, n_teachers: int, seconds: float):
    """The FitResult of the teacher pass: the body of each of ``n_teachers`` teachers (shaped like ``model``) once
    over ``n_features`` features of ``tokens`` tokens in all (module docstring)."""
    _, body = head_and_body(model)
    return FitResult(
        train_time_s=seconds,
        samples=n_features * n_teachers,
        training_loss=0.0,
        stage="teacher_hidden",
        forward_tokens=tokens * n_teachers,
        flops=float(2 * body * tokens * n_teachers),
    )
