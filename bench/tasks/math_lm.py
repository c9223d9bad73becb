"""Grade-school maths by chain-of-thought generation (kind ``causal_lm``): train on MetaMathQA, score on GSM8K.

The setting of Hugging Face PEFT's method comparison (``method_comparison/MetaMathQA`` in github.com/huggingface/peft:
``data.py``, ``utils.py``, ``run.py``, ``default_training_params.json``), written anew here:

- Sources, one per split: ``train`` is ``meta-math/MetaMathQA`` (its only split, "train"; columns ``query``,
  ``response``, ``type``, ``original_question``), ``test`` is ``openai/gsm8k`` (config "main", split "test";
  columns ``question``, ``answer``). Offline, each lives in its own folder of the data dir:
  ``<dir>/metamathqa/train.parquet`` and ``<dir>/gsm8k/test.parquet``. A data dir without the file is a
  FileNotFoundError naming it and the hub dataset; there is never a fallback from the folder to the hub.
- Rows: every loaded split gets an ``id`` column (the row's index in the split as loaded, as a string; GSM8K has no
  id) unless it has one, so an evaluation subset keeps its ids. The train split then keeps only the rows with
  ``len(f"{query} {response}") <= 1300`` characters, as PEFT does (``CHAR_LIMIT`` in its data.py; ~94 % of
  MetaMathQA): a tokenizer-free rule, the same for every model, that keeps every training sequence well inside
  768 tokens so the response is never cut.
- Prompt: PEFT's query template as plain text, ``Question: {problem} Think step by step.\\nAnswer:`` (the problem is
  MetaMathQA's ``query`` or GSM8K's ``question``, stripped), tokenized with the tokenizer's own special tokens (a
  BOS where it adds one). A training sequence is the prompt's ids, then the ids of ``" " + response`` and the
  end-of-turn token (`end_of_turn_id`: ``<|im_end|>`` for SmolLM2, else eos, e.g. Llama 3's
  ``<|end_of_text|>``); its labels are the response and that end token, -100 on the prompt. Not the chat template
  the other causal_lm tasks use: PEFT trains the base ``meta-llama/Llama-3.2-3B``, which is not a chat model and
  whose chat turns would end in ``<|eot_id|>``, not its eos. ``chat_template=True`` puts the same user message in
  the tokenizer's chat template instead (`CausalLmTask`'s format).
- Truncation as in `CausalLmTask`: only the problem text is cut, from its end, until the sequence fits
  ``max_length``; the template and the response never are.
- Evaluation: greedy generation of at most ``max_new_tokens`` (300, PEFT's ``max_new_tokens``; PEFT also caps
  prompt + generation at 800 tokens, which a GSM8K prompt of under 500 tokens never reaches, so that cap is not
  kept), stopping at the end-of-turn token, the same decoding as ``squad_lm``. The predicted answer is
  `extract_answer` of the generated text, the gold `gold_answer` of GSM8K's ``answer`` (after ``####``) or, on a
  MetaMathQA row (a dev split held out of train), `extract_answer` of its ``response``; `answers_match` compares
  them. Headline ``accuracy``, the fraction correct (0-1; ``metric_scale`` 100).

Where this differs from PEFT's ``utils.parse_answer`` / ``get_accuracy``: PEFT takes the first delimiter of a fixed
list that occurs ("The answer is: ", "The answer is ", "The final answer is: ", "The final answer is ",
"#### ") and the text after its last occurrence, up to the line's end; here the last occurrence of any of them
(case-insensitive) wins, and the answer is the first number in that line's text. Without any delimiter PEFT scores
the example wrong; here the last number of the generation is the answer. PEFT parses the decoded prompt plus the
generation; here only the generation is parsed. Both compare numbers as floats (PEFT exactly, here within 1e-6)
and fall back to comparing strings.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench.data import load_hub, load_local_parquet, resolve_data_dir
from bench.tasks.causal_lm import CausalLmTask, SquadLmTask, end_of_turn_id

if TYPE_CHECKING:
    from datasets import Dataset

MATH_HEAD = "Question: "
MATH_TAIL = " Think step by step.\nAnswer:"
CHAR_LIMIT = 1300  # PEFT's data.CHAR_LIMIT: len(f"{query} {response}") of a kept training row
TOLERANCE = 1e-6  # two numeric answers match when they differ by at most this

# The phrases after which an answer follows: MetaMathQA's "The answer is: 18", "The final answer is ...", and
# GSM8K's "#### 18".
_DELIMITER = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\b|####", re.IGNORECASE)
# A number: an optional minus and/or dollar sign, digits (thousands separated by commas, or none), an optional
# decimal part, an optional "/denominator".
_NUMBER = re.compile(r"(?:-\$?|\$-?)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?")
_STRIP = " \t.!?$%:*"


def _clean(text: str) -> str:
    """A number's text without currency signs, thousands commas, spaces or a trailing full stop."""
    return text.replace("$", "").replace(",", "").strip().rstrip(".").strip()


def _to_float(text: str) -> float | None:
    """The value of a cleaned number ("-1000", "3.5", "3/4"), or None when it is not one (or not finite)."""
    try:
        if "/" in text:
            numerator, denominator = text.split("/")
            value = float(numerator) / float(denominator)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def extract_answer(text: str) -> str | None:
    """The answer a solution text ends on, as a cleaned string, or None when it states none.

    After the last "The answer is" / "The final answer is" / "####" (any case): the first number on the rest of
    that line, cleaned of "$" and thousands commas ("The answer is: $1,000." → "1000"; "-3", "2.5" and "3/4" are
    kept as written), else the rest of that line stripped of spaces and ".!?$%:*" (None when nothing is left).
    Without any of those phrases: the last number of the text, cleaned alike ("... so 18 in all." → "18"), else
    None.
    """
    delimiters = list(_DELIMITER.finditer(text))
    if delimiters:
        line = text[delimiters[-1].end() :].lstrip(" \t\r\n:").split("\n", 1)[0]
        number = _NUMBER.search(line)
        if number:
            return _clean(number.group())
        rest = line.strip(_STRIP)
        return rest or None
    numbers = _NUMBER.findall(text)
    return _clean(numbers[-1]) if numbers else None


def gold_answer(solution: str) -> str:
    """GSM8K's gold answer: the text after the last "####" of its ``answer``, cleaned ("#### 1,000" → "1000")."""
    if "####" not in solution:
        raise ValueError(f"GSM8K answer has no '####' line: {solution[-80:]!r}")
    return _clean(solution.rsplit("####", 1)[1])


def answers_match(predicted: str | None, gold: str) -> bool:
    """Whether a predicted answer (`extract_answer`, None: no answer) equals the gold one: as numbers within
    ``TOLERANCE`` when both are numbers ("18.0" = "18", "0.5" = "1/2"), else as case-folded strings."""
    if predicted is None:
        return False
    a, b = _clean(predicted), _clean(gold)
    x, y = _to_float(a), _to_float(b)
    if x is not None and y is not None:
        return abs(x - y) <= TOLERANCE
    return a.casefold() == b.casefold() and bool(a)


@dataclass(frozen=True)
class SplitSource:
    """Where one split comes from: a hub dataset (id, config) and a folder under the data dir."""

    hub_id: str
    hub_config: str | None
    local_dir: str


@dataclass(frozen=True, kw_only=True)
class MathLmTask(CausalLmTask):
    """Maths word problems answered by greedy chain-of-thought generation (module docstring).

    ``sources`` maps each split to its `SplitSource`; the Task fields ``hub_id`` / ``hub_config`` / ``local_dir``
    name the evaluation split's.
    """

    sources: tuple[tuple[str, SplitSource], ...]
    max_new_tokens: int = 300
    char_limit: int | None = CHAR_LIMIT
    head: str = MATH_HEAD
    tail: str = MATH_TAIL
    chat_template: bool = False

    output: ClassVar[str] = "generation"

    # ------------------------------------------------------------------ source
    def source(self, split: str) -> SplitSource:
        """The split's source; ValueError for a split this task does not have."""
        sources = dict(self.sources)
        if split not in sources:
            raise ValueError(
                f"task {self.name!r} has splits {' and '.join(map(repr, sources))} only "
                f"({', '.join(f'{s}: {src.hub_id}' for s, src in sources.items())}), got {split!r}"
            )
        return sources[split]

    def local_path(self, data_dir: Path, split: str) -> Path:
        return Path(data_dir) / self.source(split).local_dir / f"{split}.parquet"

    def load(self, split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
        """One split from its own source: the data dir's file if a data dir is set (or $HYBRIDFT_DATA_DIR), else
        the hub; never a fallback. Adds ``id`` and, for the train split, applies the character limit."""
        if not isinstance(split, str) or not split:
            raise ValueError(f"task {self.name!r}: split must be a non-empty string, got {split!r}")
        source = self.source(split)
        root = resolve_data_dir(data_dir)
        if root is None:
            dataset = load_hub(source.hub_id, source.hub_config, split)
        else:
            dataset = load_local_parquet(self.local_path(root, split), hub_id=source.hub_id,
                                         hub_config=source.hub_config, split=split)  # fmt: skip
        if "id" not in dataset.column_names:
            dataset = dataset.add_column("id", [str(i) for i in range(len(dataset))])
        if split == self.train_split and self.char_limit is not None:
            limit = self.char_limit

            def short(batch):
                return [len(f"{q} {r}") <= limit for q, r in zip(batch["query"], batch["response"], strict=True)]

            dataset = dataset.filter(short, batched=True, desc=f"{self.name}: rows of at most {limit} characters")
        return dataset

    # ------------------------------------------------------------------ features
    def user_parts(self, example: dict) -> tuple[str, str, str]:
        problem = example["query"] if "query" in example else example["question"]
        return self.head, str(problem).strip(), self.tail

    def response(self, example: dict) -> str:
        if "response" not in example:
            raise ValueError(f"task {self.name!r}: example {example.get('id')!r} has no 'response' to train on")
        return str(example["response"]).strip()

    def eval_columns(self, example: dict) -> dict:
        return {"example_id": example["id"]}

    def _render(self, tokenizer, head: str, text: str, tail: str, response: str | None) -> tuple[list, list | None]:
        """Plain-text ids (module docstring): the prompt, and prompt + " " + response + the end-of-turn token."""
        if self.chat_template:
            return super()._render(tokenizer, head, text, tail, response)
        prompt = list(tokenizer(head + text + tail)["input_ids"])
        if response is None:
            return prompt, None
        answer = list(tokenizer(" " + response, add_special_tokens=False)["input_ids"])
        return prompt, prompt + answer + [end_of_turn_id(tokenizer)]

    # ------------------------------------------------------------------ predictions
    _predictor = SquadLmTask._predictor  # greedy, max_new_tokens, stops at the end of turn: squad_lm's decoding
    _stack = SquadLmTask._stack

    decode = SquadLmTask.decode  # per example id: the generated text

    def gold(self, example: dict) -> str:
        """The example's gold answer: GSM8K's after "####", or the one a MetaMathQA response ends on."""
        if "answer" in example:
            return gold_answer(str(example["answer"]))
        found = extract_answer(str(example["response"]))
        if found is None:
            raise ValueError(f"task {self.name!r}: example {example.get('id')!r} has no answer in its response")
        return found

    def correct(self, predictions: Any, features: Dataset, examples: Dataset) -> list[bool]:
        """Per example, in the examples' order: whether the generated answer matches the gold one."""
        generated = self.decode(predictions, features, examples)
        return [answers_match(extract_answer(generated[example["id"]]), self.gold(example)) for example in examples]

    def compute_metrics(self, predictions: Any, features: Dataset, examples: Dataset) -> dict[str, float]:
        """``accuracy``: the fraction of examples whose generated answer matches the gold one (0-1)."""
        hits = self.correct(predictions, features, examples)
        return {"accuracy": sum(hits) / len(hits) if hits else 0.0}

    def example_rows(self, predictions: Any, features: Dataset, examples: Dataset, *, headline: str) -> dict | None:
        """Per-example statistics for `bench.scoring.example_stats`: kind "mean", one row [1.0 or 0.0] per
        example, whose mean is ``compute_metrics``' accuracy (None for any other headline)."""
        if headline != "accuracy":
            return None
        hits = self.correct(predictions, features, examples)
        return {"kind": "mean", "rows": [[1.0 if hit else 0.0] for hit in hits]}


GSM8K_SOURCE = SplitSource("openai/gsm8k", "main", "gsm8k")
METAMATHQA_SOURCE = SplitSource("meta-math/MetaMathQA", None, "metamathqa")
GSM8K_LM = MathLmTask(
    name="gsm8k_lm",
    kind="causal_lm",
    num_labels=0,
    label_names=(),
    hub_id=GSM8K_SOURCE.hub_id,
    hub_config=GSM8K_SOURCE.hub_config,
    local_dir=GSM8K_SOURCE.local_dir,
    sources=(("train", METAMATHQA_SOURCE), ("test", GSM8K_SOURCE)),
    train_split="train",
    eval_split="test",
    headline="accuracy",
    metric_name="gsm8k",  # no evaluate module: compute_metrics matches the answers itself
)
