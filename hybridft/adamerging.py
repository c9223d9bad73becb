"""AdaMerging (Yang et al., ICLR 2024) for the hybrid weight mix: per-layer α learned without labels.

The mix θ(α) = α_g·θ_pre + (1−α_g)·θ_fine has one α per depth group g (`hybridft.layer_alpha.layer_groups`:
embeddings, each encoder layer, what follows the last layer). AdaMerging's layer-wise variant learns such
coefficients by minimising the Shannon entropy of the merged model's predictions on unlabelled inputs, used as a
surrogate for the loss on them. Here:

- the inputs are the training features' ``input_ids`` / ``attention_mask`` / ``token_type_ids``; labels are never
  read. The entropy is that of the softmax over classes: per example for sequence classification, per token with
  attention_mask = 1 for token classification (the task's labels, and so its ignored positions, are not used);
- Adam over the α vector only (lr ``lr``, 1e-3 in AdaMerging's code), ``steps`` steps on batches of ``batch_size``
  features drawn without replacement, epoch after epoch, by a generator seeded with ``seed``; each α is clamped to
  [0, 1] after every step. The merged weights go in through `torch.func.functional_call`, so the teachers' weights
  get no gradient, only the α's do;
- every α starts at 0.5, the hybrid method's default mix (AdaMerging starts its task-vector coefficients at 0.3);
- the merged model runs in eval mode (dropout off), so the entropy is that of the model that will be used;
- the entropy at start and end is measured on a fixed probe of at most `PROBE_SIZE` training features (drawn first
  by the same generator), so the two are comparable; the per-step entropies form the curve, averaged over each
  twentieth of the steps as the Trainer logs its loss.

Regression (one output, no distribution), QA and causal LMs are not supported (`SUPPORTED_KINDS`).

Compute (`hybridft.compute`): every training token goes forward and backward through the whole network (the
gradient reaches the embeddings' α), 6·P per token; the probe passes are forward only, 2·P per token. Mixing the
weights at each step (about 3 operations per weight) is left out, like the optimizer's own arithmetic elsewhere.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch.func import functional_call
from tqdm.auto import tqdm

from hybridft.compute import PassParameters, batch_tokens, pass_parameters
from hybridft.fitting import FitResult
from hybridft.layer_alpha import layer_groups

SUPPORTED_KINDS = ("classification", "token")
INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")
INITIAL_ALPHA = 0.5
PROBE_SIZE = 256
CURVE_POINTS = 20


@dataclass
class AdaMergeResult:
    """The learned α per group, the state-dict name → α map that builds the student, entropies and cost."""

    per_group: list[float]
    alphas: dict[str, float]
    entropy_start: float
    entropy_end: float
    fit: FitResult


def check_kind(kind: str, task_name: str = "") -> None:
    """ValueError naming the kind unless AdaMerging's entropy applies to it."""
    if kind not in SUPPORTED_KINDS:
        where = f"task {task_name!r} of kind {kind!r}" if task_name else f"kind {kind!r}"
        raise ValueError(
            f"alpha='adamerging' minimises the entropy of class predictions; it applies to "
            f"{' and '.join(SUPPORTED_KINDS)} tasks, not to {where}"
        )


def mean_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Shannon entropy (nats) of softmax(logits) over the last axis, over rows where ``mask`` is 1 if given."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    if mask is None:
        return entropy.mean()
    weights = mask.to(entropy.dtype)
    return (entropy * weights).sum() / weights.sum().clamp_min(1.0)


def _rows(inputs, indices: list[int]) -> list[dict]:
    batch = inputs[indices]
    return [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]


def adamerge(pre: torch.nn.Module, fine: torch.nn.Module, features, collator, *, kind: str, steps: int, lr: float,
             batch_size: int, seed: int, device="cpu", progress: bool = False) -> AdaMergeResult:  # fmt: skip
    """Learn per-group α for mixing ``pre`` and ``fine`` on ``features``' inputs (module docstring). The models are
    left untouched; the student is ``interpolate_models(pre, fine, result.alphas)``."""
    check_kind(kind)
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        raise ValueError(f"adamerging steps must be an integer >= 1, got {steps!r}")
    if len(features) == 0:
        raise ValueError("adamerging needs at least one training feature")
    start_time = time.perf_counter()
    groups = layer_groups(fine)
    model = copy.deepcopy(fine).to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    full = pass_parameters(model).forward
    cost = PassParameters(forward=full, backward=full, trainable=full)  # gradients flow through every layer
    # One entry per tensor (a tied weight once; functional_call ties its other name to it).
    names, seen = [], set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            names.append(name)
    pre_state, fine_state = pre.state_dict(), fine.state_dict()
    pairs = {n: (pre_state[n].detach().to(device), fine_state[n].detach().to(device)) for n in names}
    group_of = {n: groups.of[n] for n in names}
    alpha = torch.full((groups.count,), INITIAL_ALPHA, dtype=torch.float32, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([alpha], lr=lr)

    def merged() -> dict[str, torch.Tensor]:
        out = {}
        for name, (p, f) in pairs.items():
            if p.is_floating_point():
                a = alpha[group_of[name]]
                out[name] = (a * p.float() + (1.0 - a) * f.float()).to(p.dtype)
            else:
                out[name] = p
        return out

    def entropy_of(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        batch = {k: v.to(device) for k, v in batch.items() if k in INPUT_COLUMNS}
        logits = functional_call(model, merged(), args=(), kwargs=batch).logits
        mask = batch.get("attention_mask") if kind == "token" else None
        return mean_entropy(logits, mask), batch_tokens(batch)

    inputs = features.select_columns([c for c in INPUT_COLUMNS if c in features.column_names])
    generator = torch.Generator().manual_seed(int(seed))
    n = len(inputs)
    probe = torch.randperm(n, generator=generator)[:PROBE_SIZE].tolist()

    def probe_entropy() -> tuple[float, int]:
        total, weight, tokens = 0.0, 0.0, 0
        with torch.no_grad():
            for i in range(0, len(probe), batch_size):
                chunk = probe[i : i + batch_size]
                value, counted = entropy_of(collator(_rows(inputs, chunk)))
                # token entropies are averaged over tokens, sequence entropies over examples
                w = float(counted) if kind == "token" else float(len(chunk))
                total, weight, tokens = total + float(value) * w, weight + w, tokens + int(counted)
        return total / max(weight, 1.0), tokens

    entropy_start, probe_tokens = probe_entropy()
    order: list[int] = []
    tokens, losses, curve, window = 0, [], [], []
    every = max(1, round(steps / CURVE_POINTS))
    bar = tqdm(range(1, steps + 1), desc="adamerging", disable=not progress)
    for step in bar:
        while len(order) < batch_size:
            order += torch.randperm(n, generator=generator).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        optimizer.zero_grad(set_to_none=True)
        entropy, counted = entropy_of(collator(_rows(inputs, chosen)))
        entropy.backward()
        optimizer.step()
        with torch.no_grad():
            alpha.clamp_(0.0, 1.0)
        value = float(entropy.detach())
        tokens += int(counted)
        losses.append(value)
        window.append(value)
        if step % every == 0 or step == steps:
            curve.append((step, sum(window) / len(window)))
            window = []
            bar.set_postfix(entropy=f"{value:.4f}")
    entropy_end, _ = probe_entropy()
    forward_tokens = 2 * probe_tokens
    per_group = [float(a) for a in alpha.detach().cpu().tolist()]
    alphas = {name: per_group[g] for name, g in groups.of.items()}
    result = FitResult(
        train_time_s=time.perf_counter() - start_time,
        samples=steps * batch_size,
        training_loss=sum(losses) / len(losses),  # non-finite if any step's was
        stage="adamerging",
        tokens=tokens,
        forward_tokens=forward_tokens,
        optimizer_steps=steps,
        flops=float(tokens * cost.train_flops_per_token + forward_tokens * cost.forward_flops_per_token),
        curve=tuple(curve),
    )
    return AdaMergeResult(per_group=per_group, alphas=alphas, entropy_start=entropy_start, entropy_end=entropy_end,
                          fit=result)  # fmt: skip


__all__ = ["SUPPORTED_KINDS", "AdaMergeResult", "adamerge", "check_kind", "mean_entropy"]
