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
``lm_head``, `get_output_embeddings`) is a real (vocabulary × hidden) matmul on every position whose logits are
formed, so it counts as the pass's last layer: a forward parameter, one that gradients flow through, and trainable
when its weight is. For SmolLM2-135M that is 28.3 M of 134.5 M weights. A pass that forms logits on only some
positions (the hybrid LM student, `hybridft.lm_distill`) counts the head on those rows itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def pass_parameters(model: torch.nn.Module) -> PassParameters:
    """P_fwd, P_grad and P_trainable of ``model`` as its requires_grad flags stand now (shared tensors once)."""
    embeddings = _embedding_parameter_ids(model)
    seen: set[int] = set()
    forward = backward = trainable = 0
    reached_trainable = False
    for _, param in model.named_parameters():
        if id(param) in seen or id(param) in embeddings:
            continue
        seen.add(id(param))
        n = param.numel()
        forward += n
        reached_trainable = reached_trainable or param.requires_grad
        if reached_trainable:
            backward += n
        if param.requires_grad:
            trainable += n
    head = tied_output_head(model, embeddings)
    if head is not None:
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


def batch_tokens(inputs: dict) -> torch.Tensor:
    """Non-padding tokens of a batch: attention_mask.sum() (every position when there is no mask)."""
    mask = inputs.get("attention_mask")
    if mask is not None:
        return mask.detach().sum()
    ids = inputs.get("input_ids")
    return torch.tensor(ids.numel() if ids is not None else 0)


__all__ = ["PassParameters", "batch_tokens", "pass_parameters", "tied_output_head"]
