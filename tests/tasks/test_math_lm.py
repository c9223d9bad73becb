"""gsm8k_lm (train on MetaMathQA, score GSM8K by greedy generation): answer extraction and matching, per-split
sources from a local folder or the hub, PEFT's plain-text prompt with response-only labels, truncation of the problem
only, the accuracy, its per-example rows and baseline, and predict_outputs on a tiny random Llama."""

from __future__ import annotations

import dataclasses

import pytest
from datasets import Dataset

import bench.tasks.math_lm as math_lm
from bench.data import DATA_DIR_ENV
from bench.scoring import example_stats, majority_baseline, metric_from_stats
from bench.tasks import get_task, offline_task_names, task_names
from bench.tasks.causal_lm import IGNORE_INDEX
from bench.tasks.math_lm import CHAR_LIMIT, MATH_HEAD, MATH_TAIL, answers_match, extract_answer, gold_answer
from hybridft.models import build_model, load_tokenizer

END = "<|im_end|>"

TRAIN_ROWS = {
    "query": ["What is 3 + 4?", "Tom has 2 apples and buys 5 more. How many apples does he have?", "Long one? " * 200],
    "response": [
        "3 + 4 = 7.\nThe answer is: 7",
        "He has 2 + 5 = 7 apples.\nThe answer is: 7",
        "Yes.\nThe answer is: 1",
    ],
    "type": ["GSM_Rephrased", "GSM_AnsAug", "MATH_AnsAug"],
    "original_question": ["What is 3 + 4?", "Tom has 2 apples...", "Long one?"],
}
TEST_ROWS = {
    "question": ["A shop sells 250 pens a day. How many pens does it sell in 4 days?", "What is 10 - 12?",
                 "A car costs $8,000 and a bike $400. What do both cost?", "What is half of 7?"],
    "answer": ["250 * 4 = <<250*4=1000>>1000\n#### 1,000", "10 - 12 = -2\n#### -2", "8000 + 400 = 8400\n#### 8,400",
               "7 / 2 = 3.5\n#### 3.5"],
}  # fmt: skip


@pytest.fixture(scope="module")
def task():
    return get_task("gsm8k_lm")


@pytest.fixture(scope="module")
def tokenizer(task):
    return load_tokenizer("tiny-llama", task)


@pytest.fixture
def local_dir(tmp_path):
    (tmp_path / "metamathqa").mkdir()
    (tmp_path / "gsm8k").mkdir()
    Dataset.from_dict(TRAIN_ROWS).to_parquet(str(tmp_path / "metamathqa" / "train.parquet"))
    Dataset.from_dict(TEST_ROWS).to_parquet(str(tmp_path / "gsm8k" / "test.parquet"))
    return tmp_path


# ---------------------------------------------------------------------- answers
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 + 4 = 7.\nThe answer is: 7", "7"),
        ("The answer is: 18.", "18"),  # a trailing full stop
        ("So it costs $1,000 in all. The answer is: $1,000.", "1000"),  # "$" and thousands commas
        ("The answer is: 1,234,567", "1234567"),
        ("The answer is -3", "-3"),  # negative
        ("the answer is: -$5", "-5"),
        ("The final answer is 2.5!", "2.5"),  # decimals, "final", another case
        ("The answer is: 3/4", "3/4"),
        ("The answer is:\n42", "42"),  # the answer on the next line
        ("The answer is: 5 apples.\n\nQuestion: what is 99?", "5"),  # what follows the answer's line is ignored
        ("First 7, then the answer is 9. Later the answer is 11", "11"),  # the last delimiter wins
        ("#### 8,400", "8400"),  # GSM8K's own delimiter
        ("The answer is: twelve.", "twelve"),  # no number after the delimiter: its text
        ("He has 2 + 5 = 7 apples, so 12 in all", "12"),  # no delimiter: the last number
        ("I do not know.", None),  # no number at all
        ("The answer is: .", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_gold_answer_and_matching():
    assert gold_answer("250 * 4 = <<250*4=1000>>1000\n#### 1,000") == "1000"
    assert gold_answer("#### -2") == "-2" and gold_answer("x\n#### $5.") == "5"
    with pytest.raises(ValueError, match="no '####'"):
        gold_answer("1000")
    assert answers_match("1000", "1000") and answers_match("1000.0", "1000") and answers_match("1,000", "1000")
    assert answers_match("0.5", "1/2") and answers_match("3.5000001", "3.5")
    assert not answers_match("3.5001", "3.5") and not answers_match("-2", "2")
    assert not answers_match(None, "7") and not answers_match("twelve", "12") and not answers_match("", "")
    assert answers_match("Twelve", "twelve")  # strings when not numbers, case-folded


# ---------------------------------------------------------------------- sources
def test_registered_last_and_not_offline_in_the_shared_data(task, data_dir):
    from transformers import AutoModelForCausalLM

    assert task_names()[-1] == "gsm8k_lm" and task_names()[-3:-1] == ["sst2_lm", "squad_lm"]
    assert (task.kind, task.output, task.headline, task.metric_scale) == ("causal_lm", "generation", "accuracy", 100.0)
    assert (task.train_split, task.eval_split, task.max_new_tokens) == ("train", "test", 300)
    assert task.model_class() is AutoModelForCausalLM and task.model_kwargs() == {}
    assert "gsm8k_lm" not in offline_task_names(data_dir) and not task.has_offline(data_dir)


def test_local_splits_come_from_their_own_folders(task, local_dir, monkeypatch):
    assert task.has_offline(local_dir) and "gsm8k_lm" in offline_task_names(local_dir)
    assert task.local_path(local_dir, "train") == local_dir / "metamathqa" / "train.parquet"
    assert task.local_path(local_dir, "test") == local_dir / "gsm8k" / "test.parquet"
    train = task.load("train", local_dir)
    assert len(TRAIN_ROWS["query"][2]) > CHAR_LIMIT  # the third row is over PEFT's character limit: dropped
    assert train["query"] == TRAIN_ROWS["query"][:2] and train["id"] == ["0", "1"]
    test = task.load("test", local_dir)
    assert test["question"] == TEST_ROWS["question"] and test["id"] == ["0", "1", "2", "3"]
    assert test.select([2, 3])["id"] == ["2", "3"]  # an evaluation subset keeps the rows' ids
    monkeypatch.setenv(DATA_DIR_ENV, str(local_dir))
    assert task.load("test")["id"] == test["id"]
    unlimited = dataclasses.replace(task, char_limit=None)
    assert len(unlimited.load("train", local_dir)) == 3


def test_a_missing_file_is_named_and_never_replaced_by_the_hub(task, local_dir, monkeypatch):
    monkeypatch.setattr(math_lm, "load_hub", lambda *args: pytest.fail(f"hub used: {args}"))
    (local_dir / "gsm8k" / "test.parquet").unlink()
    assert not task.has_offline(local_dir)
    with pytest.raises(FileNotFoundError) as error:
        task.load("test", local_dir)
    message = str(error.value)
    assert str(local_dir / "gsm8k" / "test.parquet") in message and "openai/gsm8k (config 'main')" in message
    (local_dir / "metamathqa" / "train.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"metamathqa/train\.parquet.*meta-math/MetaMathQA"):
        task.load("train", local_dir)
    with pytest.raises(ValueError, match=r"has splits 'train' and 'test' only"):
        task.load("validation", local_dir)
    with pytest.raises(ValueError, match="split must be a non-empty string"):
        task.load("", local_dir)


def test_without_a_data_dir_each_split_comes_from_its_hub_dataset(task, monkeypatch):
    calls = []

    def hub(hub_id, hub_config, split):
        calls.append((hub_id, hub_config, split))
        return Dataset.from_dict(TRAIN_ROWS if split == "train" else TEST_ROWS)

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(math_lm, "load_hub", hub)
    assert len(task.load("train")) == 2 and len(task.load("test")) == 4
    assert calls == [("meta-math/MetaMathQA", None, "train"), ("openai/gsm8k", "main", "test")]


# ---------------------------------------------------------------------- features
def test_training_features_are_peft_prompts_with_response_only_labels(task, tokenizer):
    examples = Dataset.from_dict({k: v[:2] for k, v in TRAIN_ROWS.items()} | {"id": ["0", "1"]})
    features = task.preprocess(examples, tokenizer, max_length=128, train=True)
    prompts = task.preprocess(examples, tokenizer, max_length=128, train=False)
    assert prompts["example_id"] == ["0", "1"]
    for feature, prompt, example in zip(features, prompts, examples, strict=True):
        ids, labels = feature["input_ids"], feature["labels"]
        n = len(prompt["input_ids"])
        assert ids[:n] == prompt["input_ids"] and feature["attention_mask"] == [1] * len(ids)
        assert tokenizer.decode(prompt["input_ids"], skip_special_tokens=True) == (
            f"{MATH_HEAD}{example['query']}{MATH_TAIL}"
        )
        assert labels[:n] == [IGNORE_INDEX] * n and IGNORE_INDEX not in labels[n:]
        assert tokenizer.decode(labels[n:]) == f" {example['response']}{END}" and ids[-1] == labels[-1]


def test_truncation_cuts_the_problem_only(task, tokenizer):
    query = "A farmer counts the sheep in every field of the valley, one by one, twice. " * 20
    response = "There are 3 fields of 4 sheep, so 3 * 4 = 12.\nThe answer is: 12"
    examples = Dataset.from_dict({"id": ["7"], "query": [query], "response": [response]})
    (train,) = task.preprocess(examples, tokenizer, max_length=80, train=True)
    (prompt,) = task.preprocess(examples, tokenizer, max_length=80, train=False)
    assert 75 <= len(train["input_ids"]) <= 80 and 75 <= len(prompt["input_ids"]) <= 80
    text = tokenizer.decode(train["input_ids"], skip_special_tokens=True)
    assert text.startswith(MATH_HEAD) and text.endswith(f"{MATH_TAIL} {response}")
    kept = text[len(MATH_HEAD) :].split(MATH_TAIL)[0]
    assert 0 < len(kept) < len(query) and query.startswith(kept)
    labelled = [i for i in train["labels"] if i != IGNORE_INDEX]
    assert tokenizer.decode(labelled) == f" {response}{END}"  # the response is whole
    assert tokenizer.decode(prompt["input_ids"], skip_special_tokens=True).endswith(MATH_TAIL)
    with pytest.raises(ValueError, match=r"max_length=20 cannot hold the chat template"):
        task.preprocess(examples, tokenizer, max_length=20, train=True)


def test_chat_template_variant(task, tokenizer):
    chat = dataclasses.replace(task, chat_template=True)
    examples = Dataset.from_dict({"id": ["0"], "query": ["What is 3 + 4?"], "response": ["The answer is: 7"]})
    (feature,) = chat.preprocess(examples, tokenizer, max_length=128, train=True)
    user = {"role": "user", "content": f"{MATH_HEAD}What is 3 + 4?{MATH_TAIL}"}
    assert feature["input_ids"] == tokenizer.apply_chat_template(
        [user, {"role": "assistant", "content": "The answer is: 7"}]
    )
    assert tokenizer.decode([i for i in feature["labels"] if i != IGNORE_INDEX]) == f"The answer is: 7{END}"


# ---------------------------------------------------------------------- scores
@pytest.fixture(scope="module")
def scored(task, tokenizer):
    examples = Dataset.from_dict(TEST_ROWS).add_column("id", ["0", "1", "2", "3"])
    features = task.preprocess(examples, tokenizer, max_length=128, train=False)
    return features, examples


def test_accuracy_rows_and_baseline_agree(task, scored):
    features, examples = scored
    answers = ["250 * 4 = 1000.\nThe answer is: 1,000.", "The answer is: 2", "So $8,400 in all", "I cannot tell."]
    assert task.correct(answers, features, examples) == [True, False, True, False]
    metrics = task.compute_metrics(answers, features, examples)
    assert metrics == {"accuracy": 0.5}
    stats = example_stats(task, answers, features, examples)
    assert stats == {"kind": "mean", "rows": [[1.0], [0.0], [1.0], [0.0]]}
    assert metric_from_stats(stats["kind"], stats["rows"]) == pytest.approx(metrics["accuracy"], abs=1e-12)
    assert example_stats(task, answers, features, examples, headline="f1") is None
    assert majority_baseline(task, features, examples) == 0.0
    reordered = features.select([3, 1, 0, 2])  # answers follow the features' ids, scores the examples' order
    assert task.correct([answers[i] for i in (3, 1, 0, 2)], reordered, examples) == [True, False, True, False]
    with pytest.raises(ValueError, match="predictions have 3 rows but there are 4 features"):
        task.compute_metrics(answers[:3], features, examples)
    with pytest.raises(ValueError, match="no prediction for 2 examples"):
        task.compute_metrics(answers[:2], features.select([0, 1]), examples)
    with pytest.raises(ValueError, match="features lack 'example_id'"):
        task.compute_metrics(answers, features.remove_columns("example_id"), examples)


def test_a_dev_split_of_metamathqa_is_scored_on_its_responses(task, tokenizer):
    examples = Dataset.from_dict({k: v[:2] for k, v in TRAIN_ROWS.items()} | {"id": ["0", "1"]})
    features = task.preprocess(examples, tokenizer, max_length=128, train=False)
    assert task.compute_metrics(["The answer is: 7", "8"], features, examples) == {"accuracy": 0.5}


def test_predict_outputs_generates_strings_on_a_tiny_llama(task, tokenizer, scored):
    features, examples = scored
    short = dataclasses.replace(task, max_new_tokens=4)
    model = build_model("tiny-llama", short, 0)
    answers = short.predict_outputs(model, features, tokenizer, batch_size=3)
    assert isinstance(answers, list) and len(answers) == len(features) and all(isinstance(a, str) for a in answers)
    assert 0.0 <= short.compute_metrics(answers, features, examples)["accuracy"] <= 1.0
