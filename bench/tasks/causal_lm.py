"""Causal-LM tasks: instruction-style prompts through the tokenizer's chat template (kind ``causal_lm``).

Every example becomes one chat turn: a user message (an instruction wrapped around the example's text) and an
assistant response. The ids are the tokenizer's own chat template (``apply_chat_template``; SmolLM2's adds its
default system prompt): the prompt is ``[user]`` with the generation prompt, the full sequence ``[user, assistant]``,
and the full sequence must start with the prompt's ids.

Training features (``train=True``): ``input_ids`` and ``attention_mask`` of the full sequence, and ``labels`` equal
to the ids on the response (the assistant's content and its end-of-turn token, ``<|im_end|>`` for SmolLM2) and -100
everywhere else (the prompt, and whatever the template puts after the end of turn, SmolLM2's trailing newline).

Truncation: only the example's own text is cut (the review, the context), from its end at a token boundary, until
the sequence fits ``max_length``; the instruction, the question, the template's control tokens and the response are
never cut. A training sequence is the full one; an evaluation prompt keeps room for the longest label word (choice
tasks, so train and eval prompts are cut alike) or nothing (generation). A ``max_length`` that cannot hold the
template, the instruction and the response even with the text emptied is a ValueError.

Tasks:

- ``sst2_lm``: SST-2 (same data as the GLUE ``sst2`` task) with verbalised labels: the user asks for the review's
  sentiment as one word, the response is ``negative`` or ``positive``. Scoring is by label-word log-likelihood, not
  by generation: an evaluation feature is the prompt only (ending with the generation prompt) plus ``labels`` = the
  class id, and a prediction is an (n, 2) array of the log-softmax over the whole vocabulary at the last prompt
  position, read at each label word's token id (each label word must be one token). Its argmax is scored by the
  GLUE sst2 metric (accuracy), through the GLUE task itself.
- ``squad_lm``: the ``squad_devsplit`` examples (its loading and title split, reused) as answer generation: the user
  message is the instruction, the context and the question; the response is the first gold answer. Evaluation is
  greedy generation (``max_new_tokens``, stopping at the end of turn), decoded and stripped, scored with the
  official SQuAD EM/F1 (headline F1, 0-100). A prediction is one string per example. The context is cut from its
  end, so at a small ``max_length`` the answer may be cut out of it.

Predictions come from `CausalLmTask.predict_outputs` (`bench.experiment.model_predictions` calls it), not from
the Trainer: batches sorted by length and left-padded, explicit position ids, and for the log-likelihood path
``logits_to_keep=1`` so no (batch, length, vocabulary) logits are ever held.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DataCollatorForSeq2Seq, GenerationConfig

from bench.tasks.base import DropColumnsCollator, Task, as_numpy, check_max_length, check_rows, check_tokenizer
from bench.tasks.glue import GLUE_TASKS
from bench.tasks.squad import SQUAD, SQUAD_DEVSPLIT, SQUAD_V2

# The tasks an LM task can draw its rows from, by name (its ``source``).
SOURCE_TASKS = {task.name: task for task in (*GLUE_TASKS, SQUAD, SQUAD_V2, SQUAD_DEVSPLIT)}

if TYPE_CHECKING:
    from datasets import Dataset

END_OF_TURN = "<|im_end|>"
IGNORE_INDEX = -100

# The prompts. A user message is head + text + tail; only the text (the example's own) is ever truncated.
SST2_HEAD = "Is the sentiment of this review positive or negative? Answer with one word.\n\nReview: "
SST2_TAIL = ""
SQUAD_HEAD = "Answer the question with a short span copied from the context.\n\nContext: "
SQUAD_TAIL = "\n\nQuestion: {question}"


def end_of_turn_id(tokenizer) -> int:
    """The token that ends an assistant turn: ``<|im_end|>`` when the vocabulary has it, else eos."""
    token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)  # the unk id (or None) when it is not in the vocabulary
    if isinstance(token_id, int) and tokenizer.convert_ids_to_tokens(token_id) == END_OF_TURN:
        return token_id
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has neither {END_OF_TURN!r} nor an eos token to end a turn")
    return tokenizer.eos_token_id


def _tokenizer_name(tokenizer) -> str:
    return f"{type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '') or 'unnamed'})"


def _unwrapped(model):
    """The transformers model under a PEFT wrapper (AdapterHub models are the transformers model itself)."""
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def _model_device(model):
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


@dataclass(frozen=True, kw_only=True)
class CausalLmTask(Task):
    """A task whose model is a causal LM trained on chat-formatted (prompt, response) pairs (module docstring).

    Subclasses give the user message in three parts (``user_parts``: head, the truncatable text, tail), the
    response (``response``), how evaluation features look (``eval_columns``) and the per-batch prediction
    (``_predictor``).
    """

    model_auto_class: ClassVar[str] = "AutoModelForCausalLM"
    output: ClassVar[str] = ""  # "choice" (label-word log-likelihoods) or "generation" (greedy answers)

    def model_kwargs(self) -> dict[str, Any]:
        """Nothing: the LM head is the vocabulary (no labels, no task head)."""
        return {}

    # ------------------------------------------------------------------ per task
    def user_parts(self, example: dict) -> tuple[str, str, str]:
        """(head, text, tail) of the user message; only ``text`` is truncated."""
        raise NotImplementedError

    def response(self, example: dict) -> str:
        """The assistant's content for training."""
        raise NotImplementedError

    def eval_reserve(self, tokenizer) -> int:
        """Tokens an evaluation prompt leaves free under max_length (the longest response for choice tasks)."""
        return 0

    def eval_columns(self, example: dict) -> dict:
        """Columns of an evaluation feature beside input_ids / attention_mask."""
        raise NotImplementedError

    # ------------------------------------------------------------------ ids
    def _render(self, tokenizer, head: str, text: str, tail: str, response: str | None) -> tuple[list, list | None]:
        user = {"role": "user", "content": head + text + tail}
        prompt = list(
            tokenizer.apply_chat_template([user], add_generation_prompt=True, tokenize=True, return_dict=False)
        )
        if response is None:
            return prompt, None
        full = list(
            tokenizer.apply_chat_template(
                [user, {"role": "assistant", "content": response}], tokenize=True, return_dict=False
            )
        )
        if full[: len(prompt)] != prompt:
            raise ValueError(
                f"task {self.name!r}: the chat template of {_tokenizer_name(tokenizer)} does not start the "
                f"[user, assistant] ids with the [user] + generation-prompt ids; causal_lm tasks need a template "
                f"whose prompt is a prefix of the full conversation"
            )
        return prompt, full

    def _fit(self, tokenizer, example: dict, response: str | None, max_length: int, reserve: int = 0):
        """(prompt ids, full ids | None) with the example's text cut from its end until they fit max_length."""
        head, text, tail = self.user_parts(example)
        while True:
            prompt, full = self._render(tokenizer, head, text, tail, response)
            excess = len(full if full is not None else prompt) + reserve - max_length
            if excess <= 0:
                return prompt, full
            if not text:
                size = len(full if full is not None else prompt) + reserve
                raise ValueError(
                    f"task {self.name!r}: max_length={max_length} cannot hold the chat template, the instruction "
                    f"and the response ({size} tokens with the example's text cut to nothing); raise max_length"
                )
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            keep = len(offsets) - excess
            cut = text[: offsets[keep - 1][1]] if keep > 0 else ""
            text = cut if len(cut) < len(text) else text[:-1]  # always shorter, so the loop ends

    def _response_labels(self, tokenizer, prompt: list, full: list, end: int) -> list[int]:
        try:
            last = full.index(end, len(prompt))
        except ValueError:
            raise ValueError(
                f"task {self.name!r}: the chat template of {_tokenizer_name(tokenizer)} puts no end-of-turn token "
                f"(id {end}) after the response"
            ) from None
        return [IGNORE_INDEX] * len(prompt) + full[len(prompt) : last + 1] + [IGNORE_INDEX] * (len(full) - last - 1)

    def preprocess(
        self, dataset: Dataset, tokenizer, *, max_length: int = 128, train: bool, stride: int = 64
    ) -> Dataset:
        """Chat-template ids; train: the full turn with response-only labels; eval: the prompt (module docstring).

        ``stride`` is unused (no windows: one feature per example)."""
        check_tokenizer(tokenizer, self.name)
        check_max_length(max_length, self.name)
        reserve = 0 if train else self.eval_reserve(tokenizer)
        end = end_of_turn_id(tokenizer)

        def tokenize(example):
            if train:
                prompt, full = self._fit(tokenizer, example, self.response(example), max_length)
                return {"input_ids": full, "attention_mask": [1] * len(full),
                        "labels": self._response_labels(tokenizer, prompt, full, end)}  # fmt: skip
            prompt, _ = self._fit(tokenizer, example, None, max_length, reserve)
            return {"input_ids": prompt, "attention_mask": [1] * len(prompt), **self.eval_columns(example)}

        return dataset.map(tokenize, remove_columns=dataset.column_names, desc=f"tokenizing {self.name}")

    def collator(self, tokenizer):
        """Training batches: input_ids / attention_mask padded on the right with the pad token, labels with -100."""
        return DropColumnsCollator(
            DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX), drop=("example_id",)
        )

    # ------------------------------------------------------------------ predictions
    def predict_outputs(self, model, features: Dataset, tokenizer, *, batch_size: int, progress: bool = False) -> Any:
        """What ``compute_metrics`` takes, row-aligned with ``features`` (evaluation features, train=False).

        Batches of ``batch_size`` over the features sorted by length (longest first), left-padded, on the model's
        device, in eval mode under no_grad (the model's training flag is restored after); outputs put back in the
        features' order. Works for plain, PEFT-wrapped and AdapterHub transformers causal LMs."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"task {self.name!r}: batch_size must be a positive int, got {batch_size!r}")
        if "input_ids" not in features.column_names:
            raise ValueError(f"task {self.name!r}: features lack 'input_ids'; preprocess them first")
        ids = features["input_ids"]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_of_turn_id(tokenizer)
        device = _model_device(model)
        predict = self._predictor(model, tokenizer)
        outputs: list = [None] * len(ids)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                starts = range(0, len(order), batch_size)
                for start in tqdm(starts, desc=f"predicting {self.name}", disable=not progress):
                    rows = order[start : start + batch_size]
                    width = max(len(ids[i]) for i in rows)
                    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
                    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
                    for r, i in enumerate(rows):
                        n = len(ids[i])
                        input_ids[r, width - n :] = torch.tensor(ids[i], dtype=torch.long)
                        attention_mask[r, width - n :] = 1
                    batch = predict(input_ids.to(device), attention_mask.to(device))
                    for r, i in enumerate(rows):
                        outputs[i] = batch[r]
        finally:
            model.train(was_training)
        return self._stack(outputs)

    def _predictor(self, model, tokenizer):
        """A function (left-padded input_ids, attention_mask) → one output per row."""
        raise NotImplementedError

    def _stack(self, outputs: list) -> Any:
        return outputs


# ---------------------------------------------------------------------- label words
@dataclass(frozen=True, kw_only=True)
class ChoiceLmTask(CausalLmTask):
    """Classification by verbalised labels: the response is ``label_names[label]``; scored by the label words'
    log-likelihood at the last prompt position (module docstring). ``metric_config`` names the GLUE task whose
    compute_metrics scores the argmax."""

    text_key: str = "sentence"
    head: str = SST2_HEAD
    tail: str = SST2_TAIL

    output: ClassVar[str] = "choice"

    def user_parts(self, example: dict) -> tuple[str, str, str]:
        return self.head, str(example[self.text_key]).strip(), self.tail

    def response(self, example: dict) -> str:
        label = int(example["label"])
        if not 0 <= label < self.num_labels:
            raise ValueError(f"task {self.name!r}: label {label} is not a class id (unlabelled split?); cannot train")
        return self.label_names[label]

    def label_token_ids(self, tokenizer) -> tuple[int, ...]:
        """The token id of each label word as the assistant turn starts it; ValueError unless it is one token."""
        found = []
        for word in self.label_names:
            prompt, full = self._render(tokenizer, "", "", "", word)
            tokens = full[len(prompt) : full.index(end_of_turn_id(tokenizer), len(prompt))]
            if len(tokens) != 1:
                pieces = tokenizer.convert_ids_to_tokens(tokens)
                raise ValueError(
                    f"task {self.name!r}: label word {word!r} is {len(tokens)} tokens for "
                    f"{_tokenizer_name(tokenizer)} ({pieces}, ids {tokens}); log-likelihood scoring needs one token "
                    f"per label word"
                )
            found.append(tokens[0])
        if len(set(found)) != len(found):
            raise ValueError(f"task {self.name!r}: label words {self.label_names} share a token ({found})")
        return tuple(found)

    def eval_reserve(self, tokenizer) -> int:
        longest = max(self.label_names, key=len)
        prompt, full = self._render(tokenizer, "", "", "", longest)
        return len(full) - len(prompt)

    def eval_columns(self, example: dict) -> dict:
        return {"labels": int(example["label"])}

    def preprocess(
        self, dataset: Dataset, tokenizer, *, max_length: int = 128, train: bool, stride: int = 64
    ) -> Dataset:
        self.label_token_ids(tokenizer)  # fail early on multi-token label words
        return super().preprocess(dataset, tokenizer, max_length=max_length, train=train, stride=stride)

    def predict_outputs(self, model, features: Dataset, tokenizer, *, batch_size: int, progress: bool = False) -> Any:
        """(n, num_labels) float64 log-probabilities of the label words at the last prompt position."""
        return super().predict_outputs(model, features, tokenizer, batch_size=batch_size, progress=progress)

    def _predictor(self, model, tokenizer):
        inner = type(_unwrapped(model))
        if "logits_to_keep" not in inspect.signature(inner.forward).parameters:
            raise ValueError(
                f"task {self.name!r}: {inner.__name__}.forward takes no logits_to_keep; label-word scoring needs it "
                f"(so that no (batch, length, vocab) logits are held)"
            )
        label_ids = list(self.label_token_ids(tokenizer))

        def predict(input_ids, attention_mask):
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        logits_to_keep=1)  # fmt: skip
            log_probs = torch.log_softmax(out.logits[:, -1, :].double(), dim=-1)[:, label_ids]
            return list(log_probs.cpu().numpy())

        return predict

    def _stack(self, outputs: list) -> np.ndarray:
        if not outputs:
            return np.zeros((0, self.num_labels), dtype=np.float64)
        return np.stack(outputs).astype(np.float64)

    def _glue_task(self):
        return next(task for task in GLUE_TASKS if task.name == self.metric_config)

    def compute_metrics(self, predictions: Any, features: Dataset, examples: Dataset) -> dict[str, float]:
        """argmax of the label-word log-likelihoods, scored by the GLUE task's own compute_metrics."""
        scores = as_numpy(predictions)
        if scores.ndim != 2 or scores.shape[1] != self.num_labels:
            raise ValueError(f"task {self.name!r}: predictions must be (n, {self.num_labels}), got {scores.shape}")
        return self._glue_task().compute_metrics(scores, features, examples)


# ---------------------------------------------------------------------- generation
@dataclass(frozen=True, kw_only=True)
class SquadLmTask(CausalLmTask):
    """SQuAD-style answer generation on the examples of the task ``source`` (loaded by it: same splits)."""

    source: str = "squad_devsplit"
    max_new_tokens: int = 32
    head: str = SQUAD_HEAD
    tail: str = SQUAD_TAIL

    output: ClassVar[str] = "generation"

    def _source(self) -> Task:
        try:
            return SOURCE_TASKS[self.source]
        except KeyError:
            raise ValueError(
                f"{self.name}: unknown source task {self.source!r}; known: {', '.join(SOURCE_TASKS)}"
            ) from None

    def local_path(self, data_dir: Path, split: str) -> Path:
        return self._source().local_path(data_dir, split)

    def load(self, split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
        return self._source().load(split, data_dir)

    def has_offline(self, data_dir: str | os.PathLike) -> bool:
        return self._source().has_offline(data_dir)

    def user_parts(self, example: dict) -> tuple[str, str, str]:
        return self.head, example["context"].strip(), self.tail.format(question=example["question"].strip())

    def response(self, example: dict) -> str:
        texts = example["answers"]["text"]
        if not texts:
            raise ValueError(f"task {self.name!r}: example {example['id']!r} has no gold answer to train on")
        return texts[0].strip()

    def eval_columns(self, example: dict) -> dict:
        return {"example_id": example["id"]}

    def _predictor(self, model, tokenizer):
        end = end_of_turn_id(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens,
                                  eos_token_id=end, pad_token_id=pad, bos_token_id=tokenizer.bos_token_id)  # fmt: skip

        def predict(input_ids, attention_mask):
            generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
            answers = []
            for row in generated[:, input_ids.shape[1] :].tolist():
                if end in row:
                    row = row[: row.index(end)]
                answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
            return answers

        return predict

    def _stack(self, outputs: list) -> list[str]:
        return list(outputs)

    def decode(self, predictions: Any, features: Dataset, examples: Dataset) -> dict[str, str]:
        """Per example id: the generated answer (predictions: one string per feature)."""
        texts = [str(p) for p in predictions]
        check_rows(texts, len(features), self.name)
        if "example_id" not in features.column_names:
            raise ValueError(f"task {self.name!r}: features lack 'example_id'; preprocess them with train=False")
        answers = dict(zip(features["example_id"], texts, strict=True))
        missing = [i for i in examples["id"] if i not in answers]
        if missing:
            raise ValueError(f"task {self.name!r}: no prediction for {len(missing)} examples (e.g. {missing[0]!r})")
        return answers

    def compute_metrics(self, predictions: Any, features: Dataset, examples: Dataset) -> dict[str, float]:
        """The official SQuAD v1.1 EM/F1 (0-100) of the generated answers."""
        answers = self.decode(predictions, features, examples)
        predicted = [{"id": i, "prediction_text": answers[i]} for i in examples["id"]]
        references = [{"id": i, "answers": a} for i, a in zip(examples["id"], examples["answers"], strict=True)]
        scores = self.metric().compute(predictions=predicted, references=references)
        return {key: float(value) for key, value in scores.items()}


SST2_LM = ChoiceLmTask(
    name="sst2_lm",
    kind="causal_lm",
    num_labels=2,
    label_names=("negative", "positive"),
    hub_id="nyu-mll/glue",
    hub_config="sst2",
    local_dir="glue/sst2",
    headline="accuracy",
    metric_name="glue",
    metric_config="sst2",
)
SQUAD_LM = SquadLmTask(
    name="squad_lm",
    kind="causal_lm",
    num_labels=0,
    label_names=(),
    hub_id="rajpurkar/squad",
    hub_config=None,
    local_dir="squad",
    headline="f1",
    metric_name="squad",
    metric_scale=1.0,
)
CAUSAL_LM_TASKS = (SST2_LM, SQUAD_LM)
