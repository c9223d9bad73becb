"""`HybridTrainer`: hybrid fine-tuning as a Hugging Face `Trainer`, for your own model and data.

    from hybridft import HybridTrainer, HybridTrainingArguments

    args = HybridTrainingArguments(output_dir="out", alpha=0.5, beta=1.0, gamma=1.0, temperature=2.0)
    trainer = HybridTrainer(model=pretrained, args=args, train_dataset=train, eval_dataset=dev,
                            processing_class=tokenizer)
    trainer.train(); trainer.evaluate(); trainer.save_model()

What it does at construction, before `train` (docs/design.md §1):

1. θ_pre: ``model`` itself for a causal LM (its head already speaks); for a model with a task head, ``model`` after a
   linear probe (the head fit to convergence on the frozen encoder's features by a convex solver, its L2 strength
   chosen by ``lp_folds``-fold cross-validation over ``lp_l2_grid``, `hybridft.probe`), since a random head gives
   the pretrained teacher nothing to say. The probe's features give θ_pre's teacher rows by one matmul.
2. θ_fine: ``fine_tuned_model`` (a model or a folder) if given, else every weight fine-tuned from θ_pre (LP-FT; for a
   causal LM from the pretrained LM), by the recipe the bench uses (``ft_*`` arguments). Both stages are cached
   under ``teacher_cache_dir`` by the hash of the starting weights, the training features and the stage's settings,
   so a second trainer on the same inputs loads them instead of training them again.
3. The student starts at θ_mix = α·θ_pre + (1−α)·θ_fine (every weight, head included); with ``peft_config`` it is
   wrapped by PEFT and only its adapter (and ``modules_to_save``) trains.
4. Each teacher runs once over the distillation inputs, the training set followed by ``unlabeled_dataset`` if given,
   and its outputs are cached on disk: logits for small heads, and for a causal LM its final hidden states at the
   response positions, never vocabulary logits (the loss takes the teachers' head weights,
   `hybridft.hybrid_kd_linear_loss`). A teacher whose weight is 0 is not run. The teacher bodies are not kept for
   training.

Training then minimises ce_weight·CE(z_mix, y) + β·T²·KL(p_pre ‖ p_mix) + γ·T²·KL(p_fine ‖ p_mix) per row
(`hybridft.hybrid_kd_loss`; MSE to the label and to each teacher for regression). Rows are examples
(classification, regression), first sub-words (token classification: a ``kd_mask`` column if the features have
one, else the positions whose label is not −100), start and end positions (QA) or response tokens (causal LM).

Unlabelled inputs. ``unlabeled_dataset`` rows join the training set with their labels set to ignored, so they feed
the two KL terms only: CE stays on the labelled rows. Both sets go through one sampler, so a batch mixes them in
proportion to their sizes. The "mean" reduction averages CE over the batch's labelled rows and each KL term over all
of its rows, labelled or not; with more unlabelled than labelled inputs, distillation therefore weighs more per
example than the label, and β and γ are the knobs for that.

The bench's hybrid methods train through this same class (`hybridft.distill.fit_distillation` passes teachers it
has built and cached itself as ``prepared``), so there is one distillation loss path.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorForSeq2Seq, DataCollatorForTokenClassification, DataCollatorWithPadding, Trainer

from hybridft.distill import (
    IGNORE_INDEX,
    INDEX_COLUMN,
    IndexedCollator,
    TeacherLogits,
    features_hash,
    loss_for,
    rows_for,
    weights_hash,
    with_index,
    with_unlabelled,
)
from hybridft.fitting import FitResult, MeasuredTrainer, TrainSpec
from hybridft.interpolate import check_compatible, interpolate_models
from hybridft.lm_distill import LmHeadLoss, output_head, response_fraction, teacher_hidden_cost
from hybridft.teacher_quality import trainer_teacher_scores
from hybridft.teachers import (
    assign_teachers,
    build_teachers,
    needed_teachers,
    probe_settings,
    probe_teacher_rows,
    teacher_passes,
)
from hybridft.trainer_config import HybridTrainingArguments

CACHE_ENV = "HYBRIDFT_CACHE_DIR"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Auto-class suffixes → task type (the task type decides the rows and the loss; `task_type=` overrides it).
_KIND_BY_CLASS = (
    ("ForSequenceClassification", "classification"),
    ("ForTokenClassification", "token"),
    ("ForQuestionAnswering", "qa"),
    ("ForCausalLM", "causal_lm"),
)


def infer_task_type(model: torch.nn.Module) -> str:
    """The task type of a Hugging Face model from its class: sequence classification with one output (or
    ``problem_type="regression"``) is regression. A PEFT wrapper is looked through."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = type(base).__name__
    for suffix, kind in _KIND_BY_CLASS:
        if name.endswith(suffix):
            if kind == "classification":
                config = base.config
                if getattr(config, "problem_type", None) == "regression" or config.num_labels == 1:
                    return "regression"
            return kind
    suffixes = ", ".join(s for s, _ in _KIND_BY_CLASS)
    raise ValueError(f"cannot infer the task type of a {name}: expected a class ending in one of {suffixes}; "
                     "pass HybridTrainingArguments(task_type=...)")  # fmt: skip


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hybridft" / "trainer")


def default_collator(kind: str, tokenizer):
    """The padding collator each task type needs (the tokenizer pads; labels are padded with −100)."""
    if tokenizer is None:
        raise ValueError("HybridTrainer needs processing_class= (the tokenizer) or data_collator= to pad batches")
    if kind == "token":
        return DataCollatorForTokenClassification(tokenizer)
    if kind == "causal_lm":
        return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    return DataCollatorWithPadding(tokenizer)


@dataclass
class Prepared:
    """Teachers' rows already computed (the bench's methods build and cache their teachers themselves): the
    trainer then only distils. ``train_dataset`` must carry `INDEX_COLUMN` and ``data_collator`` pass it on."""

    pre_logits: TeacherLogits
    fine_logits: TeacherLogits
    rows: Any
    loss_fn: Any
    loss_kwargs: dict


def _check_features(dataset, name: str, kind: str, *, labelled: bool) -> None:
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"{name} is empty: HybridTrainer needs tokenized rows to distil on")
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        raise TypeError(f"{name} must be a datasets.Dataset of tokenized features, got {type(dataset).__name__}")
    needed = ["input_ids"]
    if labelled or kind == "causal_lm":  # an LM's labels mark its response tokens, so they are needed anyway
        needed += ["start_positions", "end_positions"] if kind == "qa" else ["labels"]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"{name} has no column {missing[0]!r} (needed for task type {kind!r}); "
                         f"its columns: {', '.join(columns)}")  # fmt: skip


def _distillation_columns(dataset, rows) -> list[str]:
    keep = (*MODEL_INPUTS, *rows.label_columns, *getattr(rows, "extra_columns", ()))
    return [c for c in dict.fromkeys(keep) if c in dataset.column_names]


def _token_mask(dataset, rows):
    """The rows' mask column (``kd_mask``) from the labels (1 where a label is set), for token features without it."""
    column = rows.mask_column
    if column in dataset.column_names:
        return dataset
    return dataset.map(lambda ex: {column: [int(y != IGNORE_INDEX) for y in ex["labels"]]}, desc=column)


class HybridTrainer(MeasuredTrainer, Trainer):
    """Hybrid fine-tuning on the `Trainer` (module docstring). Arguments as `Trainer`'s, plus:

    ``fine_tuned_model``: θ_fine, a model or a folder `from_pretrained` loads with ``model``'s class (None: built);
    ``unlabeled_dataset``: tokenized inputs for the KL terms only (labels, if any, are ignored);
    ``peft_config``: a PEFT config for the student (its adapter starts at zero, so training starts at θ_mix);
    ``prepared``: `Prepared` teachers (the bench); ``model`` is then the student itself.
    ``batching``: "random" (the `Trainer`'s sampler, the default) or "bucketed" (length-bucketed batches in a
    shuffled order, `hybridft.batching`).

    After construction ``teacher_fits`` lists the cost of every teacher stage and pass (`FitResult`, cached stages at
    their recorded cost), ``teacher_provenance`` says where each teacher came from, and ``teacher_scores`` how good
    each teacher is (`hybridft.teacher_quality`; a weak θ_pre is logged as a warning).
    """

    def __init__(
        self,
        model=None,
        fine_tuned_model=None,
        args=None,
        train_dataset=None,
        eval_dataset=None,
        unlabeled_dataset=None,
        processing_class=None,
        data_collator=None,
        compute_metrics=None,
        peft_config=None,
        callbacks=None,
        *,
        prepared: Prepared | None = None,
        **kwargs,
    ):
        if model is None:
            raise ValueError("HybridTrainer needs model= (the pretrained model, θ_pre)")
        if args is None:
            raise ValueError("HybridTrainer needs args= (a HybridTrainingArguments)")
        self.teacher_fits: list[FitResult] = []
        self.teacher_provenance: dict[str, Any] = {}
        self.teacher_scores: dict[str, Any] | None = None
        self._probe = None  # the LP stage's `Probed` (θ_pre's rows on the training features, its record)
        self.task_type: str | None = getattr(args, "task_type", None)
        if prepared is None:
            if not isinstance(args, HybridTrainingArguments):
                raise TypeError(f"args must be a HybridTrainingArguments, got {type(args).__name__}")
            kind = self.task_type = args.task_type or infer_task_type(model)
            data_collator = data_collator or default_collator(kind, processing_class)
            model, train_dataset, data_collator, prepared = self._prepare(
                model,
                fine_tuned_model,
                args,
                kind,
                train_dataset,
                unlabeled_dataset,
                data_collator,
                peft_config,
                eval_dataset,
                compute_metrics,
            )
        elif fine_tuned_model is not None or unlabeled_dataset is not None or peft_config is not None:
            raise ValueError("with prepared= teachers, fine_tuned_model, unlabeled_dataset and peft_config are the "
                             "caller's business (pass them to the teacher building instead)")  # fmt: skip
        self.pre_logits, self.fine_logits = prepared.pre_logits, prepared.fine_logits
        self.rows, self.loss_fn, self.loss_kwargs = prepared.rows, prepared.loss_fn, dict(prepared.loss_kwargs)
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            **kwargs,
        )
        # compute_loss returns this batch's own mean; no rescaling by token counts across devices.
        self.model_accepts_loss_kwargs = False

    # ------------------------------------------------------------------------------------------------ building
    def _prepare(self, model, fine, args, kind, train, unlabeled, collator, peft_config, eval_dataset=None,
                 compute_metrics=None):  # fmt: skip
        """Teachers, their cached rows, the student and the indexed distillation set (module docstring, 1–4)."""
        _check_features(train, "train_dataset", kind, labelled=True)
        rows = rows_for(kind)
        if kind == "token":
            train = _token_mask(train, rows)
        train = train.select_columns(_distillation_columns(train, rows))
        cache = Path(args.teacher_cache_dir) if args.teacher_cache_dir else default_cache_dir()
        pre, fine = self._teachers(model, fine, args, kind, train, collator, cache)
        check_compatible(pre.state_dict(), fine.state_dict())
        features = train
        if unlabeled is not None:
            _check_features(unlabeled, "unlabeled_dataset", kind, labelled=False)
            if kind == "causal_lm":
                raise ValueError("unlabeled_dataset does not apply to a causal LM: its distillation rows are the "
                                 "response tokens, which its labels mark")  # fmt: skip
            features = with_unlabelled(train, unlabeled, rows)
        features = with_index(features)
        if kind != "causal_lm":
            self.teacher_scores = trainer_teacher_scores(pre, fine, self._probe, kind, train, eval_dataset, collator,
                                                         compute_metrics, args)  # fmt: skip
        need = {"need_pre": args.beta > 0, "need_fine": args.gamma > 0}
        pre_rows, fine_rows = self._teacher_rows(pre, fine, features, collator, rows, kind, args, cache, need,
                                                 probe_rows=unlabeled is None)  # fmt: skip
        if self._probe is not None:  # keep its record and rows, not a third model
            self._probe = dataclasses.replace(self._probe, model=None, logits=None)
        student = interpolate_models(pre, fine, args.alpha)
        loss_fn = loss_for(kind)
        if kind == "causal_lm":
            pre_w, fine_w = (output_head(m).weight.detach().clone() for m in (pre, fine))
            loss_fn = LmHeadLoss(output_head(student), pre_w, fine_w)
        del pre, fine
        for param in student.parameters():
            param.requires_grad_(True)
        if peft_config is not None:
            from peft import get_peft_model  # noqa: PLC0415  heavy optional: peft

            student = get_peft_model(student, peft_config)
        extras = getattr(rows, "extra_columns", ())
        collator = IndexedCollator(rows.collator(collator) if extras else collator)
        return student, features, collator, Prepared(pre_rows, fine_rows, rows, loss_fn, args.loss_kwargs())

    def _teachers(self, model, fine, args, kind, train, collator, cache: Path):
        """(θ_pre, θ_fine): built and cached stages, or the given θ_fine (module docstring, 1–2)."""
        progress = not args.disable_tqdm
        scratch = Path(args.output_dir) / "teachers"
        # ``train`` holds its distillation columns only (`_prepare`): they are what the stages train on
        base_key = {"model": weights_hash(model), "features": features_hash(train, tuple(train.column_names)),
                    "kind": kind}  # fmt: skip

        given = None
        if isinstance(fine, (str, os.PathLike)):
            given, fine = str(fine), type(model).from_pretrained(str(fine))
        elif fine is not None:
            given = f"a {type(fine).__name__} given in memory"
        epochs = args.num_train_epochs if args.ft_epochs is None else args.ft_epochs
        ft = TrainSpec(learning_rate=args.ft_learning_rate, epochs=epochs, batch_size=args.per_device_train_batch_size,
                       seed=args.seed, weight_decay=args.ft_weight_decay, warmup_ratio=args.ft_warmup_ratio)  # fmt: skip
        built = build_teachers(cache, base_key, lambda: copy.deepcopy(model), train, collator, kind=kind,
                               probe=probe_settings(args, args.seed), ft_spec=ft,
                               fit_kwargs=lambda name: {"output_dir": scratch / name, "progress": progress, "stage": name},
                               batch_size=args.per_device_eval_batch_size, progress=progress, device=args.device,
                               pre=model if kind == "causal_lm" else None, fine=fine)  # fmt: skip
        self.teacher_fits.extend(built.fits)
        if kind == "causal_lm":
            pre_key = base_key["model"]
            self.teacher_provenance["pre"] = "the model as given (a causal LM's head already speaks)"
        else:
            self._probe = built.probed
            pre_key = built.keys["lp"]
            self.teacher_provenance["lp"] = {"stage_key": pre_key, "probe": built.probe}
            self.teacher_provenance["pre"] = "stage lp: the model with its head fit by the convex probe"
        if given is None:
            name = "ft" if kind == "causal_lm" else "lp_ft"
            self.teacher_provenance[name] = {"stage_key": built.keys[name], "spec": ft.__dict__, "from": pre_key}
            self.teacher_provenance["fine"] = f"stage {name}: every weight fine-tuned from θ_pre"
        else:
            self.teacher_provenance["fine"] = f"given: {given} (weights sha256 {weights_hash(built.fine)[:16]})"
        self.teacher_provenance["cache_dir"] = str(cache)
        return built.pre, built.fine

    def _teacher_rows(self, pre, fine, features, collator, rows, kind, args, cache, need, probe_rows=False):
        """Each needed teacher's cached rows on ``features`` (run on the training device, then back on the CPU).
        ``probe_rows``: ``features`` are the training features, so θ_pre's rows are the probe's."""

        def run(models):
            return teacher_passes(models, features, collator, rows, device=args.device, cache_dir=cache,
                                  key_data={"kind": kind}, batch_size=args.per_device_eval_batch_size,
                                  progress=not args.disable_tqdm)  # fmt: skip

        if kind != "causal_lm":
            pre_logits = self._probe.logits if probe_rows and self._probe is not None else None
            pre_rows, fine_rows, cost = probe_teacher_rows(run, features, pre, fine, **need, pre_logits=pre_logits)
            self.teacher_fits.append(cost)
            return pre_rows, fine_rows

        needed = needed_teachers(pre, fine, **need)
        computed, seconds = run(needed)
        _, tokens = response_fraction(features)
        self.teacher_fits.append(teacher_hidden_cost(needed[0], len(features), tokens, len(needed), seconds))
        return assign_teachers(computed, **need)

    # ------------------------------------------------------------------------------------------------ training
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        for column in (INDEX_COLUMN, *getattr(self.rows, "extra_columns", ())):
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def _teacher_batch(self, index, device, dtype):
        if self.pre_logits.values.device != device:
            self.pre_logits, self.fine_logits = self.pre_logits.to(device), self.fine_logits.to(device)
        return self.pre_logits.gather(index).to(dtype), self.fine_logits.gather(index).to(dtype)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The hybrid loss on a training batch (it carries `INDEX_COLUMN`); the model's own loss on any other batch
        (evaluation), so `evaluate` reports the usual eval loss."""
        if INDEX_COLUMN not in inputs:
            inputs = {k: v for k, v in inputs.items() if k not in getattr(self.rows, "extra_columns", ())}
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        index = inputs.pop(INDEX_COLUMN)
        extras = {name: inputs.pop(name) for name in getattr(self.rows, "extra_columns", ()) if name in inputs}
        targets = {name: inputs.pop(name) for name in self.rows.label_columns if name in inputs}
        forward = getattr(self.rows, "student_forward", None)
        outputs = forward(model, inputs) if forward is not None else model(**inputs)
        logits = outputs.logits if hasattr(outputs, "logits") and outputs.logits is not None else outputs[0]
        pre, fine = self._teacher_batch(index, logits.device, logits.dtype)
        student, pre, fine, labels = self.rows.loss_rows(outputs, {**inputs, **extras}, targets, pre, fine)
        loss = self.loss_fn(student, pre, fine, labels, ignore_index=IGNORE_INDEX, **self.loss_kwargs)
        return (loss, outputs) if return_outputs else loss
