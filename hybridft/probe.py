"""Linear probing as LP-FT does it (Kumar et al. 2022): the frozen encoder's features computed once, in eval mode,
and the task head fit to convergence by a convex solver. This is θ_pre, the pretrained teacher.

Features. The model runs once over the training features (batches length-sorted, order restored) with the encoder
in eval mode and no gradients; a forward pre-hook on the head's output layer keeps that layer's input. So the
features are exactly what the head sees at inference: for BERT sequence classification the pooler output, for token
classification and QA the last hidden state. Rows are laid out as the distillation rows of the head kind
(`hybridft.distill`): one per example, one per word (its first sub-word, the ``kd_mask`` column), or one per real
token of a QA window. θ_pre's teacher logits on the training features are then ``X @ W.T + b``, one matmul, and no
second encoder pass (`ProbeResult.logits`).

Fit, on features standardised over the training rows (the scaling is folded back into the head's weights, so the
model needs no extra layer):

- classification and token classification: multinomial logistic regression, scikit-learn's L-BFGS, minimising
  mean CE + (λ/2)·‖W‖² (sklearn's ``C = 1 / (λ·n)``); token rows are the first sub-words that carry a label;
- regression: ridge, mean (y − ŷ)² + λ·‖w‖² (sklearn's ``alpha = λ·n``), solved in closed form;
- QA (start/end): a softmax over each window's real tokens for the start and for the end, mean of the two CEs +
  (λ/2)·‖W‖², minimised with torch's L-BFGS in float64. The bias shifts every position alike, so it is set to 0.
  Sets with more than ``ProbeSettings.max_qa_windows`` labelled windows are fit on a seeded subsample of that many,
  recorded as ``fit_rows``.

Intercepts are not penalised. λ is chosen from ``ProbeSettings.l2_grid`` by the held-out loss (cross-entropy, or
squared error for regression): on the run's dev split when it has one, otherwise by k-fold cross-validation over the
training features (folds split by feature, so a sentence's words stay together). The held-out loss is the teacher's
job: distillation reads θ_pre's probabilities, not its argmax. Every grid point's held-out loss and accuracy (Pearson
for regression) is recorded, and so is whether each fit converged (a solver that stops at its iteration cap is
recorded as ``converged: false``, never silent).

Heads. The output layer is the head's one `torch.nn.Linear`. A head with one hidden layer before it (RoBERTa's
``dense`` + ``out_proj``, DistilBERT's ``pre_classifier`` + ``classifier``) has that square layer set to the
identity (weight I, bias 0), so θ_pre's features are the encoder's [CLS] state through the head's activation, and
only the output layer is fit; LP-FT then trains the hidden layer from the identity. Any other head is refused with
its modules named. Causal LMs have no probe: their head already speaks.

Cost: 2·P per feature token (the forward pass over the training features, and over the dev split's when the grid is
chosen there) plus the fit's multiply-adds, 4·H·C per row per solver iteration (loss and gradient), summed over
every grid point and fold; recorded as the stage's ``flops`` with ``forward_tokens``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from threadpoolctl import threadpool_limits

from hybridft.compute import pass_parameters
from hybridft.distill import IGNORE_INDEX, TeacherLogits, TokenRows, length_sorted_pass, rows_for
from hybridft.fitting import FitResult
from hybridft.models import head_module_names

PROBE_KINDS = ("classification", "regression", "token", "qa")
DEFAULT_L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
DEFAULT_FOLDS = 3
DEFAULT_MAX_ITER = 3000
DEFAULT_TOL = 1e-6
DEFAULT_MAX_QA_WINDOWS = 4000
MIN_STD = 1e-6  # a feature with a smaller standard deviation over the training rows is left unscaled


@dataclass(frozen=True)
class ProbeSettings:
    """How θ_pre's head is fit (module docstring). ``l2_grid``: candidate λ; ``folds``: cross-validation folds when
    the run has no dev split; ``max_iter`` / ``tol``: the solver's cap and tolerance; ``max_qa_windows``: the QA
    subsample; ``seed``: the folds' and the subsample's draw."""

    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    folds: int = DEFAULT_FOLDS
    max_iter: int = DEFAULT_MAX_ITER
    tol: float = DEFAULT_TOL
    max_qa_windows: int = DEFAULT_MAX_QA_WINDOWS
    seed: int = 0

    def __post_init__(self) -> None:
        grid = self.l2_grid
        if isinstance(grid, (int, float)) or not grid:
            raise ValueError(f"ProbeSettings.l2_grid must be a non-empty list of numbers > 0, got {grid!r}")
        grid = tuple(float(v) for v in grid)
        if not all(v > 0 and math.isfinite(v) for v in grid):
            raise ValueError(f"ProbeSettings.l2_grid must hold finite numbers > 0, got {list(grid)}")
        object.__setattr__(self, "l2_grid", grid)
        for name, low in (("folds", 2), ("max_iter", 1), ("max_qa_windows", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ProbeSettings.{name} must be an integer >= {low}, got {value!r}")
        if not (self.tol > 0 and math.isfinite(self.tol)):
            raise ValueError(f"ProbeSettings.tol must be a positive finite number, got {self.tol!r}")

    def key(self) -> dict:
        """What identifies the fit in a stage key (the seed is the run's, already in the key)."""
        return {"l2_grid": list(self.l2_grid), "folds": self.folds, "max_iter": self.max_iter, "tol": self.tol,
                "max_qa_windows": self.max_qa_windows, "format": 1}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# The head


@dataclass
class ProbeHead:
    """The output layer the probe fits (``name``, ``layer``) and the hidden layer set to the identity, if any."""

    name: str
    layer: torch.nn.Linear
    hidden: tuple[str, torch.nn.Linear] | None = None


def probe_head(model: torch.nn.Module) -> ProbeHead:
    """The head's output layer (and hidden layer) of a Hugging Face task model; ValueError naming the head's modules
    when it is not one linear layer, optionally after one square one (module docstring)."""
    tops = head_module_names(model)
    linears, others = [], []
    for top in tops:
        for name, module in getattr(model, top).named_modules(prefix=top):
            if isinstance(module, torch.nn.Linear):
                linears.append((name, module))
            elif any(True for _ in module.parameters(recurse=False)):
                others.append(name)
    described = ", ".join(f"{n} ({type(m).__name__})" for n, m in model.named_modules() if n in tops)
    if others or not 1 <= len(linears) <= 2:
        raise ValueError(
            f"the convex probe fits one linear output layer (optionally after one square hidden layer); the head of "
            f"{type(model).__name__} has modules {described}: linear layers {[n for n, _ in linears]}, other "
            f"parameterised modules {others}"
        )
    if len(linears) == 1:
        return ProbeHead(*linears[0])
    square = [(n, m) for n, m in linears if m.in_features == m.out_features]
    output = [(n, m) for n, m in linears if m.in_features != m.out_features]
    if len(square) != 1 or len(output) != 1 or square[0][1].out_features != output[0][1].in_features:
        raise ValueError(
            f"the head of {type(model).__name__} has two linear layers {[n for n, _ in linears]} but not one square "
            f"hidden layer feeding one output layer; its modules: {described}"
        )
    return ProbeHead(*output[0], hidden=square[0])


def identity_hidden(head: ProbeHead) -> None:
    """Set the head's hidden layer (if any) to the identity."""
    if head.hidden is None:
        return
    layer = head.hidden[1]
    with torch.no_grad():
        layer.weight.copy_(torch.eye(layer.out_features, dtype=layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.zero_()


# ---------------------------------------------------------------------------------------------------------------
# Features


@dataclass
class HeadFeatures:
    """The head's input on every distillation row of some features, in their order: ``values[offsets[i]:
    offsets[i + 1]]`` are feature i's rows; ``labels`` per row (classification, token: class or −100; regression:
    value or NaN) or, for QA, per feature (start, end); ``tokens``: the non-padding tokens the pass ran over."""

    values: torch.Tensor  # (rows, H) float32
    offsets: torch.Tensor  # (features + 1,) int64
    labels: np.ndarray
    tokens: int
    time_s: float

    def __len__(self) -> int:
        return self.offsets.numel() - 1


def _row_labels(kind: str, features) -> np.ndarray:
    """Labels in row layout (`HeadFeatures.labels`) from the features' own columns."""
    columns = features.column_names
    if kind == "qa":
        for name in ("start_positions", "end_positions"):
            if name not in columns:
                raise ValueError(f"the probe needs the label column {name!r}; the features have: {', '.join(columns)}")
        return np.stack([np.asarray(features["start_positions"]), np.asarray(features["end_positions"])], axis=1)
    if "labels" not in columns:
        raise ValueError(f"the probe needs the label column 'labels'; the features have: {', '.join(columns)}")
    if kind == "token":
        mask_column = TokenRows.mask_column
        if mask_column not in columns:
            raise ValueError(f"token probing needs the {mask_column!r} column (first sub-words); the features have: "
                             f"{', '.join(columns)}")  # fmt: skip
        rows = []
        for labels, mask in zip(features["labels"], features[mask_column], strict=True):
            rows.extend(int(y) for y, m in zip(labels, mask, strict=False) if m)
        return np.asarray(rows, dtype=np.int64)
    if kind == "regression":
        return np.asarray([np.nan if y is None else float(y) for y in features["labels"]], dtype=np.float64)
    return np.asarray([IGNORE_INDEX if y is None else int(y) for y in features["labels"]], dtype=np.int64)


def head_features(model, features, collator, *, kind: str, batch_size: int, progress: bool = False,
                  device=None) -> HeadFeatures:  # fmt: skip
    """One eval-mode, no-grad pass of ``model`` over ``features`` keeping its output layer's input per row
    (module docstring); ValueError naming the layer if a feature is NaN or infinite."""
    if kind not in PROBE_KINDS:
        raise ValueError(f"the probe applies to task kinds {', '.join(PROBE_KINDS)}, not {kind!r}")
    head = probe_head(model)
    identity_hidden(head)
    rows = rows_for(kind)
    captured: list[torch.Tensor] = []
    hook = head.layer.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))

    def step(batch, model_inputs):
        captured.clear()
        model(**model_inputs)
        x = captured[-1]
        if kind in ("classification", "regression"):
            return x.reshape(x.shape[0], -1), torch.ones(x.shape[0], dtype=torch.long)
        mask = rows.mask(batch) if kind == "token" else batch["attention_mask"].bool()
        return x[mask], mask.sum(dim=1).cpu()

    start = time.perf_counter()
    try:
        values, offsets, tokens = length_sorted_pass(model, features, collator, rows, step, batch_size=batch_size,
                                                     progress=progress, device=device, desc="probe features")  # fmt: skip
    finally:
        hook.remove()
    elapsed = time.perf_counter() - start
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"the features entering {head.name!r} of {type(model).__name__} hold NaN or inf values: the "
                         f"encoder's output before that layer is broken")  # fmt: skip
    return HeadFeatures(values, offsets, _row_labels(kind, features), tokens, elapsed)


# ---------------------------------------------------------------------------------------------------------------
# Solvers (float64 throughout)


@dataclass
class LinearFit:
    """Weights (C, H) and bias (C,) in the original feature space, and how the solver ended."""

    weight: np.ndarray
    bias: np.ndarray
    n_iter: int
    converged: bool
    state: Any = None  # the solver, to warm-start the next fit on the same rows


def _standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std < MIN_STD, 1.0, std)


def _unscale(w: np.ndarray, b: np.ndarray, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights on standardised features → weights on the raw ones: W' = W/σ, b' = b − W'·μ."""
    w = w / std
    return w, b - w @ mean


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, *, n_classes: int, max_iter: int, tol: float,
                 warm: LinearFit | None = None) -> LinearFit:  # fmt: skip
    """Multinomial logistic regression minimising mean CE + (λ/2)‖W‖² (bias free) with scikit-learn's L-BFGS.
    ``y`` holds classes in [0, n_classes); classes absent from ``y`` get weights 0 and bias −inf-like (−30).
    For two classes it is sklearn's binary form, the penalty on the difference of the two classes' weights,
    written as the symmetric pair ±w/2. ``warm``: a fit on the same rows at another λ, whose solution starts this
    one (the same minimum, fewer iterations)."""
    mean, std = _standardize(x)
    z = (x - mean) / std
    present = np.unique(y)
    if warm is not None and warm.state is not None:
        model = warm.state.set_params(C=1.0 / (l2 * len(y)), warm_start=True)
    else:
        model = LogisticRegression(C=1.0 / (l2 * len(y)), max_iter=max_iter, tol=tol, solver="lbfgs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(z, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:  # sklearn's binary form: one row for class present[1]; the symmetric two-class form
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((n_classes, x.shape[1]))
    bias = np.full(n_classes, -30.0)
    weight[present], bias[present] = coef, intercept
    w, b = _unscale(weight, bias, mean, std)
    b[np.setdiff1d(np.arange(n_classes), present)] = -30.0
    return LinearFit(w, b, int(np.max(model.n_iter_)), converged, state=model)


def fit_ridge(x: np.ndarray, y: np.ndarray, l2: float) -> LinearFit:
    """Ridge regression minimising mean (y − ŷ)² + λ‖w‖² (intercept free), scikit-learn's closed form."""
    mean, std = _standardize(x)
    model = Ridge(alpha=l2 * len(y), solver="cholesky").fit((x - mean) / std, y)
    w, b = _unscale(model.coef_.reshape(1, -1), np.atleast_1d(model.intercept_), mean, std)
    return LinearFit(w, b, 1, True)


def _span_loss(w: torch.Tensor, z: torch.Tensor, starts, lengths, targets, l2: float) -> torch.Tensor:
    """Mean over windows of (CE(start) + CE(end)) / 2 + (λ/2)‖W‖²; z: (rows, H) standardised, windows contiguous."""
    logits = z @ w.T  # (rows, 2)
    width = int(lengths.max())
    index = starts[:, None] + torch.arange(width)[None, :]
    valid = torch.arange(width)[None, :] < lengths[:, None]
    padded = logits[index.clamp(max=logits.shape[0] - 1)].masked_fill(~valid[..., None], -torch.inf)  # (W, L, 2)
    logp = torch.log_softmax(padded, dim=1)
    picked = logp.gather(1, targets[:, None, :]).squeeze(1)  # (W, 2)
    return -picked.mean() + 0.5 * l2 * (w * w).sum()


def fit_span(x: np.ndarray, offsets: np.ndarray, targets: np.ndarray, l2: float, *, max_iter: int,
             tol: float) -> LinearFit:  # fmt: skip
    """QA start/end: per-window softmax over positions (module docstring), torch L-BFGS in float64.
    ``offsets``: window boundaries in ``x``'s rows; ``targets``: (windows, 2) positions within each window."""
    mean, std = _standardize(x)
    z = torch.from_numpy((x - mean) / std)
    offsets = torch.as_tensor(offsets, dtype=torch.long)
    starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
    targets = torch.as_tensor(targets, dtype=torch.long)
    w = torch.zeros(2, x.shape[1], dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                               history_size=20, line_search_fn="strong_wolfe")  # fmt: skip
    iterations = []

    def closure():
        solver.zero_grad()
        loss = _span_loss(w, z, starts, lengths, targets, l2)
        loss.backward()
        iterations.append(1)
        return loss

    solver.step(closure)
    n_iter = len(iterations)
    closure()  # the gradient at the solution
    converged = bool(w.grad.abs().max() <= tol * 10) or n_iter < max_iter
    weight, _ = _unscale(w.detach().numpy(), np.zeros(2), mean, std)
    return LinearFit(weight, np.zeros(2), n_iter, converged)  # a bias shifts a window's positions alike: 0


# ---------------------------------------------------------------------------------------------------------------
# Held-out scores


def _softmax_loss(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean CE, accuracy) of (rows, C) logits against classes ``y``."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), float((logits.argmax(axis=1) == y).mean())


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


@dataclass
class _Split:
    """Rows of one side of a split, ready for the solver: x, y (row labels), and QA's window offsets/targets."""

    x: np.ndarray
    y: np.ndarray
    offsets: np.ndarray | None = None


def _feature_rows(offsets: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the row numbers of features ``which``, in order; the offsets of those features among them)."""
    lengths = offsets[which + 1] - offsets[which]
    rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in which]) if len(which) else np.zeros(0, int)
    return rows, np.concatenate([[0], np.cumsum(lengths)])


def _labelled(kind: str, feats: HeadFeatures, which: np.ndarray | None = None) -> _Split:
    """The labelled rows of ``feats`` (of features ``which``, all when None)."""
    offsets = feats.offsets.numpy()
    which = np.arange(len(feats)) if which is None else np.asarray(which)
    values = feats.values.numpy()
    if kind == "qa":
        keep = which[(feats.labels[which] >= 0).all(axis=1)]
        lengths = offsets[keep + 1] - offsets[keep]
        keep = keep[(feats.labels[keep] < lengths[:, None]).all(axis=1)]
        rows, window_offsets = _feature_rows(offsets, keep)
        return _Split(values[rows].astype(np.float64), feats.labels[keep], window_offsets)
    rows, _ = _feature_rows(offsets, which)
    y = feats.labels[rows] if kind == "token" else feats.labels[which]
    keep = ~np.isnan(y) if kind == "regression" else y >= 0
    return _Split(values[rows][keep].astype(np.float64), y[keep])


def _fit(kind: str, split: _Split, l2: float, settings: ProbeSettings, n_classes: int,
         warm: LinearFit | None = None) -> LinearFit:  # fmt: skip
    if kind == "regression":
        return fit_ridge(split.x, split.y, l2)
    if kind == "qa":
        return fit_span(split.x, split.offsets, split.y, l2, max_iter=settings.max_iter, tol=settings.tol)
    return fit_logistic(split.x, split.y, l2, n_classes=n_classes, max_iter=settings.max_iter, tol=settings.tol,
                        warm=warm)  # fmt: skip


def _held_out(kind: str, fit: LinearFit, split: _Split) -> tuple[float, float]:
    """(loss, score) of ``fit`` on ``split``: CE and accuracy, squared error and Pearson, or QA's mean start/end CE
    and exact-position accuracy."""
    logits = split.x @ fit.weight.T + fit.bias
    if kind == "regression":
        pred = logits[:, 0]
        return float(((pred - split.y) ** 2).mean()), _pearson(pred, split.y)
    if kind == "qa":
        losses, hits = [], []
        for w, (lo, hi) in enumerate(zip(split.offsets[:-1], split.offsets[1:], strict=True)):
            loss, acc = _softmax_loss(logits[lo:hi].T, split.y[w])
            losses.append(loss)
            hits.append(acc)
        return float(np.mean(losses)), float(np.mean(hits))
    return _softmax_loss(logits, split.y)


def _majority(kind: str, fit_split: _Split, held: _Split) -> float:
    """The trivial baseline in `_held_out`'s score: the training rows' most frequent class (QA: start and end
    pair) predicted for every held-out row; a constant's Pearson, 0, for regression."""
    if kind == "regression":
        return 0.0
    if kind == "qa":
        pairs, counts = np.unique(fit_split.y, axis=0, return_counts=True)
        top = pairs[counts.argmax()]
        return float((held.y == top).all(axis=1).mean())
    classes, counts = np.unique(fit_split.y, return_counts=True)
    return float((held.y == classes[counts.argmax()]).mean())


def _fit_flops(kind: str, split: _Split, fit: LinearFit, n_outputs: int) -> float:
    """4·H·C per row per iteration (loss and gradient); ridge: one pass of X'X (2·H² per row)."""
    rows, width = split.x.shape
    if kind == "regression":
        return 2.0 * rows * width * width
    return 4.0 * rows * width * n_outputs * max(1, fit.n_iter)


# ---------------------------------------------------------------------------------------------------------------
# The probe


@dataclass
class ProbeResult:
    """What the probe chose and measured; ``record()`` is the stage's probe entry."""

    kind: str
    l2: float
    selection: str  # "dev" or "cv:<k>"
    grid: list[dict[str, Any]]
    train_loss: float
    train_rows: int
    fit_rows: int
    converged: bool
    n_iter: int
    feature_tokens: int
    dev_tokens: int
    feature_time_s: float
    fit_time_s: float
    fit_flops: float
    held_out_score: float  # at the chosen λ: accuracy (QA: exact position), or Pearson for regression
    majority: float  # the trivial baseline's held-out score on the same rows (`_majority`)
    width: int  # H, the features' width
    logits: Any = field(default=None, repr=False)  # TeacherLogits of θ_pre on the training features

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "logits"}


def check_fit_rows(kind: str, split: _Split, label_column: str) -> None:
    """ValueError naming the label column when the training rows cannot be fit: none, or a single class."""
    if len(split.y) == 0:
        raise ValueError(f"no labelled training rows to probe on (label column {label_column!r})")
    if kind in ("classification", "token") and len(np.unique(split.y)) < 2:
        raise ValueError(f"the training rows hold a single class ({int(split.y[0])}) in label column "
                         f"{label_column!r}: a probe needs at least two")  # fmt: skip
    if kind == "regression" and float(np.std(split.y)) == 0:
        raise ValueError(f"the training rows hold one value ({split.y[0]}) in label column {label_column!r}")


def _folds(n_features: int, settings: ProbeSettings) -> list[np.ndarray]:
    order = np.random.default_rng([settings.seed, 0xF01D]).permutation(n_features)
    return [np.sort(part) for part in np.array_split(order, settings.folds)]


def select_l2(kind: str, train: HeadFeatures, dev: HeadFeatures | None, settings: ProbeSettings,
              n_classes: int) -> tuple[float, list[dict], str, float, float, LinearFit | None]:  # fmt: skip
    """(chosen λ, the grid's records, the selection ("dev" or "cv:k"), the fit FLOPs spent choosing, the trivial
    baseline's held-out score, the fit at λ on every training row when the grid already made it)."""
    label = "start_positions" if kind == "qa" else "labels"
    if dev is not None:
        held = [(_labelled(kind, train), _labelled(kind, dev))]
        if len(held[0][1].y) < max(2, n_classes if kind in ("classification", "token") else 2):
            raise ValueError(f"the dev split has {len(held[0][1].y)} labelled rows, fewer than the {n_classes} "
                             f"classes of the probe: raise dev_size")  # fmt: skip
        selection = "dev"
    else:
        parts = _folds(len(train), settings)
        held = []
        for i, part in enumerate(parts):
            rest = np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i]))
            held.append((_labelled(kind, train, rest), _labelled(kind, train, part)))
        smallest = min(len(h.y) for _, h in held)
        if smallest < max(2, n_classes if kind in ("classification", "token") else 2):
            raise ValueError(f"{settings.folds}-fold cross-validation leaves {smallest} labelled rows in a fold, fewer "
                             f"than the probe's {n_classes} classes: lower the fold count (ProbeSettings.folds) or "
                             f"give more training rows")  # fmt: skip
        selection = f"cv:{settings.folds}"
    for fit_split, _ in held:
        check_fit_rows(kind, fit_split, label)
    majority = float(np.mean([_majority(kind, fit_split, held_split) for fit_split, held_split in held]))
    grid, flops, fits = [], 0.0, {}
    warm: list[LinearFit | None] = [None] * len(held)
    for l2 in sorted(set(settings.l2_grid), reverse=True):  # strongest first: each fit warm-starts the next
        losses, scores, converged = [], [], True
        for i, (fit_split, held_split) in enumerate(held):
            fit = warm[i] = _fit(kind, fit_split, l2, settings, n_classes, warm=warm[i])
            flops += _fit_flops(kind, fit_split, fit, n_classes)
            loss, score = _held_out(kind, fit, held_split)
            losses.append(loss)
            scores.append(score)
            converged = converged and fit.converged
        fits[l2] = LinearFit(fit.weight, fit.bias, fit.n_iter, fit.converged)
        grid.append({"l2": l2, "loss": float(np.mean(losses)), "score": float(np.mean(scores)),
                     "converged": converged, "n_iter": fit.n_iter})  # fmt: skip
    grid.sort(key=lambda g: g["l2"])
    best = min(grid, key=lambda g: (g["loss"] if math.isfinite(g["loss"]) else math.inf, -g["l2"]))
    # on the dev split the grid's fit at the chosen λ is the final fit already (the same training rows)
    final = fits[best["l2"]] if dev is not None else None
    return best["l2"], grid, selection, flops, majority, final


def _qa_subsample(feats: HeadFeatures, settings: ProbeSettings) -> HeadFeatures:
    """At most ``settings.max_qa_windows`` labelled QA windows of ``feats``, a seeded draw (all when fewer): the rows
    the grid and the final fit see."""
    labelled = np.flatnonzero((feats.labels >= 0).all(axis=1))
    if len(labelled) <= settings.max_qa_windows:
        return feats
    keep = np.sort(np.random.default_rng([settings.seed, 0x5A]).choice(labelled, settings.max_qa_windows,
                                                                        replace=False))  # fmt: skip
    rows, offsets = _feature_rows(feats.offsets.numpy(), keep)
    return HeadFeatures(feats.values[torch.from_numpy(rows)], torch.from_numpy(offsets), feats.labels[keep],
                        feats.tokens, feats.time_s)  # fmt: skip


def fit_probe(model, train: HeadFeatures, *, kind: str, dev: HeadFeatures | None = None,
              settings: ProbeSettings | None = None) -> ProbeResult:  # fmt: skip
    """Choose λ (dev split or cross-validation), fit the head on every labelled training row at that λ, and write
    the weights into ``model``'s output layer in place. Returns the `ProbeResult` with θ_pre's training logits."""
    settings = settings or ProbeSettings()
    head = probe_head(model)
    identity_hidden(head)
    n_classes = head.layer.out_features
    start = time.perf_counter()
    # One BLAS thread: on these small matrices a thread pool's start-up costs far more than it saves (about 50x
    # slower with OpenBLAS on two threads here).
    fitted = _qa_subsample(train, settings) if kind == "qa" else train
    with threadpool_limits(1):
        l2, grid, selection, flops, majority, fit = select_l2(kind, fitted, dev, settings, n_classes)
        fit_split = _labelled(kind, fitted)
        if fit is None:
            fit = _fit(kind, fit_split, l2, settings, n_classes)
            flops += _fit_flops(kind, fit_split, fit, n_classes)
    train_loss, _ = _held_out(kind, fit, fit_split)
    full_rows = len(_labelled(kind, train).y) if fitted is not train else len(fit_split.y)
    fit_time = time.perf_counter() - start
    layer = head.layer
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(fit.weight).to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(torch.from_numpy(fit.bias).to(layer.bias.dtype))
        elif np.any(fit.bias != 0):
            raise ValueError(f"{head.name!r} has no bias to hold the fitted intercept")
        values = (train.values.double() @ torch.from_numpy(fit.weight).T + torch.from_numpy(fit.bias)).float()
    chosen = next(g for g in grid if g["l2"] == l2)
    return ProbeResult(
        kind=kind,
        l2=l2,
        selection=selection,
        grid=grid,
        train_loss=float(train_loss),
        train_rows=full_rows,
        fit_rows=len(fit_split.y),
        converged=bool(fit.converged and all(g["converged"] for g in grid)),
        n_iter=fit.n_iter,
        feature_tokens=train.tokens,
        dev_tokens=0 if dev is None else dev.tokens,
        feature_time_s=train.time_s + (0.0 if dev is None else dev.time_s),
        fit_time_s=fit_time,
        fit_flops=flops,
        held_out_score=chosen["score"],
        majority=majority,
        width=layer.in_features,
        logits=TeacherLogits(values, train.offsets.clone(), width=layer.in_features),
    )


def linear_probe_model(model, features, collator, *, kind: str, batch_size: int, dev_features=None,
                       settings: ProbeSettings | None = None, progress: bool = False, device=None,
                       stage: str = "lp"):  # fmt: skip
    """θ_pre in place: features of ``features`` (and ``dev_features``) through ``model``'s frozen encoder, the head
    fit (`fit_probe`). Returns (`FitResult` of the stage's cost, `ProbeResult`). Every parameter stays trainable."""
    was_training = model.training
    train = head_features(model, features, collator, kind=kind, batch_size=batch_size, progress=progress,
                         device=device)  # fmt: skip
    dev = None
    if dev_features is not None:
        dev = head_features(model, dev_features, collator, kind=kind, batch_size=batch_size, progress=progress,
                            device=device)  # fmt: skip
    model.to("cpu")
    result = fit_probe(model, train, kind=kind, dev=dev, settings=settings)
    model.train(was_training)
    for param in model.parameters():
        param.requires_grad_(True)
    tokens = result.feature_tokens + result.dev_tokens
    flops = tokens * pass_parameters(model).forward_flops_per_token + result.fit_flops
    fit = FitResult(
        train_time_s=result.feature_time_s + result.fit_time_s,
        samples=len(features) + (0 if dev_features is None else len(dev_features)),
        training_loss=result.train_loss,
        stage=stage,
        forward_tokens=tokens,
        flops=float(flops),
    )
    return fit, result


__all__ = [
    "DEFAULT_L2_GRID",
    "HeadFeatures",
    "ProbeResult",
    "ProbeSettings",
    "fit_logistic",
    "fit_probe",
    "fit_ridge",
    "fit_span",
    "head_features",
    "linear_probe_model",
    "probe_head",
]
