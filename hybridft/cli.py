"""The ``hybridft`` command: fine-tune a model on your own files, or mix two model folders.

    hybridft train --model minilm --train train.csv --eval dev.csv --text-column sentence --method hybrid --output out
    hybridft mix --pre A --fine B --alpha 0.3 --output C

The command is thin: ``hybridft train`` is `hybridft.user_runs.train` (what it writes is described there) and
``hybridft mix`` is `mix` below, the same functions for Python. ``mix`` writes the mixed model, the tokenizer of
``--fine`` and ``mix.json``. Bad input stops either command before any work with exit code 2 and one line on stderr
naming the argument, the value and what was expected.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import transformers
from transformers.utils import logging as hf_logging

from hybridft import provenance
from hybridft.distill import weights_hash
from hybridft.interpolate import interpolate_models
from hybridft.teachers import FULL_FT_LR, REMOVED_LP_FIELDS
from hybridft.trainer_config import HybridTrainingArguments
from hybridft.user_data import (
    TASK_TYPES,
    InputError,
    error_reason,
)
from hybridft.user_runs import (
    HYBRID_FLAGS,
    METHODS,
    REFUSED_METHODS,
    TrainConfig,
    check_number,
    check_output,
    staged_output,
    train,
    write_json,
)


# ------------------------------------------------------------------------------------------------------ mix
@dataclass(frozen=True)
class MixConfig:
    """``hybridft mix``: θ = α·θ_pre + (1−α)·θ_fine of two model folders (or hub ids) of one architecture."""

    pre: str
    fine: str
    alpha: float
    output: Path
    model_class: str = "AutoModelForSequenceClassification"

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        check_number("--alpha", self.alpha, HYBRID_FLAGS["alpha"])
        if not (self.model_class.startswith("AutoModel") and hasattr(transformers, self.model_class)):
            raise InputError(
                "--model-class",
                f"expected a transformers Auto class such as AutoModelForCausalLM or "
                f"AutoModelForTokenClassification, got {self.model_class!r}",
            )
        check_output("--output", self.output)


def _load_model(auto_class, source: str, flag: str):
    """A model from a folder or hub id; InputError if it does not load or would get random (missing) weights.
    transformers' own warning about those is silenced: the error says it, in one line."""
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # transformers 5 draws a bar per checkpoint it loads
    try:
        model, info = auto_class.from_pretrained(source, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise InputError(flag, f"cannot load {source!r} as {auto_class.__name__}: {error_reason(exc)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise InputError(
            flag,
            f"{source!r} has no weights for {missing[0]!r} ({len(missing)} missing) as "
            f"{auto_class.__name__}: they would be random; pick its class with --model-class",
        )
    return model


def mix(config: MixConfig) -> dict[str, Any]:
    """Interpolate the two models' weights, write the folder; returns what mix.json records."""
    auto_class = getattr(transformers, config.model_class)
    pre = _load_model(auto_class, config.pre, "--pre")
    fine = _load_model(auto_class, config.fine, "--fine")
    try:
        mixed = interpolate_models(pre, fine, config.alpha)
    except ValueError as exc:
        raise InputError("--fine", f"{config.fine!r} does not match --pre {config.pre!r}: {exc}") from None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(config.fine)
    except (OSError, ValueError, TypeError):  # --fine has no tokenizer files: the folder gets none
        tokenizer = None
    record = {
        "alpha": config.alpha,
        "formula": "alpha * pre + (1 - alpha) * fine, every floating-point tensor (hybridft.interpolate)",
        "model_class": config.model_class,
        "pre": {"source": config.pre, "weights_sha256": weights_hash(pre)},
        "fine": {"source": config.fine, "weights_sha256": weights_hash(fine)},
        "weights_sha256": weights_hash(mixed),
        "weights_sha256_of": "every state-dict tensor: name, dtype, shape and bytes (hybridft.distill.weights_hash)",
        "tokenizer": None if tokenizer is None else config.fine,
        "provenance": provenance.collect(),
    }
    with staged_output(config.output) as folder:
        mixed.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        write_json(folder / "mix.json", record)
    return record


# ------------------------------------------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """A usage error is one line on stderr and exit code 2, like every other input error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _default_note(value: Any) -> str:
    return "" if value is None or value is dataclasses.MISSING else f" (default: {value})"


def _field_type(annotation: str) -> type:
    """The scalar type of a dataclass field's annotation string, e.g. ``float | None`` → float."""
    return {"float": float, "int": int, "str": str}[annotation.split("|")[0].strip()]


def _add_train(commands) -> None:
    p = commands.add_parser(
        "train",
        help="fine-tune a model on your CSV, JSON, JSONL or Parquet files",
        description="Fine-tune a sequence classifier (or regressor) on your data and write a model "
        "folder, its metrics, a record and a model card to --output.",
    )
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

    def add(group, flag: str, help: str, **kwargs):
        dest = flag[2:].replace("-", "_")
        note = "" if kwargs.get("required") else _default_note(defaults.get(dest))
        group.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=help + note, **kwargs)

    data = p.add_argument_group("data")
    add(
        data,
        "--train",
        "training data: a .csv, .json, .jsonl or .parquet file, else a hub dataset name[:config]",
        required=True,
        metavar="FILE",
    )
    add(data, "--eval", "evaluation data, as --train", required=True, metavar="FILE")
    add(data, "--text-column", "column holding the text", required=True)
    add(data, "--text-pair-column", "column holding the second text of a pair")
    add(data, "--label-column", "column holding the label")
    add(
        data,
        "--task-type",
        "classification (ints, strings, booleans) or regression (scores); inferred from the "
        "training labels when not given: floats that are not all whole numbers mean regression",
        choices=TASK_TYPES,
    )
    add(
        data,
        "--unlabeled",
        "extra inputs for the two distillation terms of the hybrid methods (labels ignored)",
        metavar="FILE",
    )
    add(data, "--train-split", "split of a hub dataset given to --train")
    add(data, "--eval-split", "split of a hub dataset given to --eval")
    add(data, "--unlabeled-split", "split of a hub dataset given to --unlabeled")
    run = p.add_argument_group("model and training")
    add(
        run,
        "--model",
        "a hub id, a local folder, or a packaged spec: minilm (all-MiniLM-L6-v2), tiny-bert (a seeded "
        "random 2-layer BERT for tests)",
        required=True,
    )
    methods = "; ".join(f"{name}: {m.about}" for name, m in METHODS.items())
    add(run, "--method", f"{methods}", choices=[*METHODS, *REFUSED_METHODS])
    lrs = ", ".join(
        f"{m.learning_rate:g} for {name}" for name, m in METHODS.items() if name in ("plain", "lora", "adapter")
    )
    add(
        run,
        "--learning-rate",
        f"learning rate of the model the method trains (default: {lrs}, {FULL_FT_LR:g} for the hybrid student)",
        type=float,
    )
    add(run, "--epochs", "training epochs", type=float)
    add(run, "--batch-size", "training batch size", type=int)
    add(run, "--max-length", "tokens per input (longer inputs are truncated)", type=int)
    add(run, "--seed", "seed of the head's initialisation, the batches and dropout", type=int)
    add(run, "--output", "the folder to write (absent or empty)", required=True, type=Path, metavar="DIR")
    run.add_argument(
        "--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS, help="no progress bars"
    )
    hybrid = p.add_argument_group(
        "hybrid methods", "Fields of hybridft.HybridTrainingArguments; its num_train_epochs is --epochs."
    )
    fields = {f.name: f for f in dataclasses.fields(HybridTrainingArguments)}
    for name in HYBRID_FLAGS:
        f = fields[name]
        hybrid.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"hybrid.{name}",
            metavar=name.upper(),
            type=_field_type(f.type),
            default=argparse.SUPPRESS,
            help=f.metadata["help"].replace("%", "%%") + _default_note(f.default),
        )
    for name in REMOVED_LP_FIELDS:  # the probe's old Adam knobs: refused with what replaces them
        hybrid.add_argument(f"--{name.replace('_', '-')}", action=_RemovedFlag, help=argparse.SUPPRESS)
    p.set_defaults(handler=_train_command)


class _RemovedFlag(argparse.Action):
    """A flag that no longer exists: the parser's error names what replaces it."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        name = option_string[2:].replace("-", "_")
        parser.error(f"{option_string} was removed: {REMOVED_LP_FIELDS[name].replace('lp_l2_grid', 'its grid')} "
                     f"(--lp-folds sets the cross-validation folds)")  # fmt: skip


def _add_mix(commands) -> None:
    p = commands.add_parser(
        "mix",
        help="interpolate two model folders: alpha·pre + (1−alpha)·fine",
        description=MixConfig.__doc__.split(": ", 1)[1],
    )
    p.add_argument("--pre", required=True, help="the pretrained model (weight alpha): a folder or hub id")
    p.add_argument("--fine", required=True, help="the fine-tuned model (weight 1 − alpha); its tokenizer is copied")
    p.add_argument("--alpha", required=True, type=float, help="weight of --pre, in [0, 1]")
    p.add_argument("--output", required=True, type=Path, metavar="DIR", help="the folder to write (absent or empty)")
    p.add_argument(
        "--model-class",
        default=MixConfig.model_class,
        help="the transformers Auto class both load with "
        "(default: %(default)s), e.g. AutoModelForCausalLM, AutoModelForTokenClassification",
    )
    p.set_defaults(handler=_mix_command)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hybridft",
        description="Fine-tune transformers on your own data (hybridft train) and "
        "interpolate model weights (hybridft mix). Run 'hybridft COMMAND --help' for a command's flags.",
    )
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    _add_train(commands)
    _add_mix(commands)
    return parser


def _train_command(args: argparse.Namespace) -> None:
    options = {k: v for k, v in vars(args).items() if k not in ("command", "handler") and not k.startswith("hybrid.")}
    hybrid = {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith("hybrid.")}
    metrics = train(TrainConfig(**options, hybrid=hybrid))
    shown = ", ".join(
        f"{k} {v:.4f}"
        for k, v in metrics.items()
        if k in ("accuracy", "macro_f1", "pearson", "spearman") and v is not None
    )
    print(f"hybridft train: wrote {args.output} ({shown} on {metrics['eval_examples']} evaluation rows)")


def _mix_command(args: argparse.Namespace) -> None:
    mix(MixConfig(args.pre, args.fine, args.alpha, args.output, args.model_class))
    print(f"hybridft mix: wrote {args.output} (alpha {args.alpha})")


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: sys.argv[1:]); returns the exit code (2: bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return int(exc.code or 0)
    try:
        args.handler(args)
    except InputError as exc:
        print(f"hybridft {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0
