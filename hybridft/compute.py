"""Training compute, counted the same way for every method: tokens, optimizer steps and estimated FLOPs.

Per token of one pass, with P counted without the embedding tables (their lookups cost no multiply-adds):

- forward: 2·P_fwd, P_fwd = every parameter the pass runs through (frozen ones included);
- activation gradients: 2·P_grad, P_grad = the parameters that gradients flow back through: everything from the
  first trainable parameter (in module order) up to the loss;
- weight gradients: 2·P_trainable.

So full fine-tuning is 6·P per token, a forward-only teacher pass 2·P, LoRA or an adapter on a frozen encoder about
4·P + 2·P_trainable (gradients still flow back through the whole encoder to its first adapted layer), and a linear
probe on a frozen encoder 2·P + 4·P_head. Tokens are the non-padding tokens of the batches (attention_mask = 1);
padding costs real time but is not useful compute, and the same rule is applied to every method. This is the
usual 6·N·D estimate of Kaplan et al. (2020), split by pass; attention's sequence-length term is left out, as there.

One exception to the embedding rule: an output head whose weight is tied to an input embedding (a causal LM's
``lm_head``, `get_output_embeddings`) is a real (vocabulary × hidden) matmul, so it counts as the pass's last layer:
a forward parameter, one that gradients flow through, and trainable when its weight is. For SmolLM2-135M that is
28.3 M of 134.5 M weights.

A causal LM's head is counted on its **loss rows** only: the positions whose next token carries a label (labels ≠
-100 after the shift), in every training pass (plain, plain_matched, LoRA, the θ_fine stage, the hybrid student;
`training_flops`). That is all the loss needs, and it is what the hybrid student runs (`hybridft.lm_distill` forms
vocabulary logits on those rows only). A Trainer's plain forward forms logits on every position; the prompt
positions' logits are thrown away, so like padding they cost time but are not useful compute, and the same rule
holds for every method. (Counting the head on every position for plain and on response rows for the student, as
before, made plain's epochs dearer than the student's and sized `plain_matched` short of the hybrid pipeline.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridft.loss_checks import IGNORE_INDEX


@dataclass(frozen=True)
class PassParameters:
    """Parameter counts that set a pass's FLOPs per token (see the module docstring)."""

    forward: int
    backward: int
    trainable: int

    @property
    def train_flops_per_token(self) -> int:
        """Forward + backward FLOPs per token of a training pass."""
        return 2 * self.forward + 2 * self.backward + 2 * self.trainable

    @property
    def forward_flops_per_token(self) -> int:
        """FLOPs per token of a forward-only pass (no gradients)."""
        return 2 * self.forward


def _embedding_parameter_ids(model: torch.nn.Module) -> set[int]:
    return {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters(recurse=False)}


def pass_parameters(model: torch.nn.Module, *, head: bool = True) -> PassParameters:
    """P_fwd, P_grad and P_trainable of ``model`` as its requires_grad flags stand now (shared tensors once).
    ``head=False``: without a causal LM's output head (`lm_head_weight`), the pass's body."""
    embeddings = _embedding_parameter_ids(model)
    skip = lm_head_weight(model) if not head else None
    seen: set[int] = set()
    forward = backward = trainable = 0
    reached_trainable = False
    for _, param in model.named_parameters():
        if id(param) in seen or id(param) in embeddings or param is skip:
            continue
        seen.add(id(param))
        n = param.numel()
        forward += n
        reached_trainable = reached_trainable or param.requires_grad
        if reached_trainable:
            backward += n
        if param.requires_grad:
            trainable += n
    tied = tied_output_head(model, embeddings)
    if tied is not None and tied is not skip:
        head = tied
        forward += head.numel()
        if reached_trainable or head.requires_grad:
            backward += head.numel()
        if head.requires_grad:
            trainable += head.numel()
    return PassParameters(forward=forward, backward=backward, trainable=trainable)


def tied_output_head(model: torch.nn.Module, embeddings: set[int] | None = None) -> torch.nn.Parameter | None:
    """The weight of ``model``'s output head when it is tied to an input embedding (so the embedding rule left it
    out of the count), else None."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.nn.Parameter):
        return None
    embeddings = _embedding_parameter_ids(model) if embeddings is None else embeddings
    return weight if id(weight) in embeddings else None


def is_causal_lm(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a causal LM (a ``*ForCausalLM`` class, or a PEFT model wrapping one)."""
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else None
    return any(type(m).__name__.endswith("ForCausalLM") for m in (model, base) if m is not None)


def lm_head_weight(model: torch.nn.Module) -> torch.nn.Parameter | None:
    """The output head's weight of a causal LM (`is_causal_lm`; tied to the input embedding or not), else None."""
    if not is_causal_lm(model):
        return None
    getter = getattr(model, "get_output_embeddings", None)
    weight = getattr(getter() if callable(getter) else None, "weight", None)
    return weight if isinstance(weight, torch.nn.Parameter) else None


def training_flops(model: torch.nn.Module, tokens: int, loss_rows: int) -> float:
    """FLOPs of training ``model`` on ``tokens`` non-padding tokens: 6·N·D by pass (module docstring), a causal
    LM's head on its ``loss_rows`` only (`batch_loss_rows`)."""
    whole = pass_parameters(model).train_flops_per_token
    if lm_head_weight(model) is None:
        return float(tokens * whole)
    body = pass_parameters(model, head=False).train_flops_per_token
    return float(tokens * body + loss_rows * (whole - body))


def batch_loss_rows(inputs: dict) -> torch.Tensor:
    """Positions of a causal-LM batch whose next token carries a label (``labels[:, 1:] != -100``); 0 for a batch
    without per-token labels."""
    labels = inputs.get("labels")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 2:
        return torch.tensor(0)
    return (labels[:, 1:] != IGNORE_INDEX).detach().sum()


def batch_tokens(inputs: dict) -> torch.Tensor:
    """Non-padding tokens of a batch: attention_mask.sum() (every position when there is no mask)."""
    mask = inputs.get("attention_mask")
    if mask is not None:
        return mask.detach().sum()
    ids = inputs.get("input_ids")
    return torch.tensor(ids.numel() if ids is not None else 0)


__all__ = [
    "PassParameters",
    "batch_loss_rows",
    "batch_tokens",
    "is_causal_lm",
    "lm_head_weight",
    "pass_parameters",
    "tied_output_head",
    "training_flops",
]
