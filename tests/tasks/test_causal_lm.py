"""Causal-LM tasks (sst2_lm, squad_lm): chat-template features with response-only labels, truncation, the
collator, label-word log-likelihoods and greedy answers through predict_outputs (plain, PEFT and AdapterHub
models), their metrics, per-example statistics and baselines."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import Dataset

from bench.scoring import example_stats, majority_baseline, metric_from_stats
from bench.tasks import get_task, offline_task_names, task_names
from bench.tasks.causal_lm import IGNORE_INDEX, SQUAD_HEAD, SST2_HEAD
from hybridft.models import build_model, load_tokenizer, seeded

MAX_LENGTH = 96
SYSTEM_START = "<|im_start|>system\n"
ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def sst2_lm():
    return get_task("sst2_lm")


@pytest.fixture(scope="module")
def squad_lm():
    return dataclasses.replace(get_task("squad_lm"), max_new_tokens=6)


@pytest.fixture(scope="module")
def lm_tokenizer(sst2_lm):
    return load_tokenizer("tiny-llama", sst2_lm)


@pytest.fixture(scope="module")
def model(sst2_lm):
    return build_model("tiny-llama", sst2_lm, 0)


@pytest.fixture(scope="module")
def untied_model():
    """A random tiny Llama whose LM head is not the embedding (a tied random one just repeats its last token)."""
    from transformers import LlamaForCausalLM

    from hybridft.lm_models import tiny_llama_config

    config = tiny_llama_config()
    config.tie_word_embeddings = False
    with seeded(1):
        return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def sst2_examples(sst2_lm, data_dir):
    return sst2_lm.load("validation", data_dir).select(range(10))


@pytest.fixture(scope="module")
def squad_examples(squad_lm, data_dir):
    return squad_lm.load("validation", data_dir).select(range(6))


def _reference_log_probs(model, features, label_ids) -> np.ndarray:
    """Float64 log-softmax of the full-vocabulary logits of each unpadded single-example forward."""
    rows = []
    with torch.no_grad():
        for ids in features["input_ids"]:
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
            rows.append(torch.log_softmax(logits, dim=-1)[list(label_ids)].numpy())
    return np.stack(rows)


def _reference_greedy(model, features, tokenizer, max_new_tokens: int) -> list[str]:
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    answers = []
    with torch.no_grad():
        for prompt in features["input_ids"]:
            ids, new = list(prompt), []
            for _ in range(max_new_tokens):
                token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
                if token == end:
                    break
                ids.append(token)
                new.append(token)
            answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return answers


# ---------------------------------------------------------------------- registry
def test_registered_after_the_other_tasks_and_offline(sst2_lm, data_dir):
    from transformers import AutoModelForCausalLM

    assert task_names()[-3:] == ["sst2_lm", "squad_lm", "gsm8k_lm"]
    assert {"sst2_lm", "squad_lm"} <= set(offline_task_names(data_dir))
    for name in ("sst2_lm", "squad_lm"):
        task = get_task(name)
        assert task.kind == "causal_lm" and task.model_kwargs() == {}
        assert task.model_class() is AutoModelForCausalLM
    assert sst2_lm.label_names == ("negative", "positive") and sst2_lm.metric_config == "sst2"
    assert sst2_lm.headline == "accuracy"
    assert get_task("squad_lm").headline == "f1"


def test_squad_lm_reuses_the_devsplit_loading(squad_lm, data_dir):
    devsplit = get_task("squad_devsplit")
    for split in ("train", "validation"):
        assert squad_lm.load(split, data_dir)["id"] == devsplit.load(split, data_dir)["id"]
    with pytest.raises(ValueError, match="'train' and 'validation' only"):
        squad_lm.load("test", data_dir)


# ---------------------------------------------------------------------- features
def test_training_labels_are_the_response_only(sst2_lm, lm_tokenizer, sst2_examples):
    features = sst2_lm.preprocess(sst2_examples, lm_tokenizer, max_length=MAX_LENGTH, train=True)
    for feature, example in zip(features, sst2_examples, strict=True):
        ids, labels = feature["input_ids"], feature["labels"]
        word = sst2_lm.label_names[example["label"]]
        user = {"role": "user", "content": SST2_HEAD + example["sentence"].strip()}
        prompt = lm_tokenizer.apply_chat_template([user], add_generation_prompt=True)
        assert ids == lm_tokenizer.apply_chat_template([user, {"role": "assistant", "content": word}])
        assert lm_tokenizer.decode([i for i, y in zip(ids, labels, strict=True) if y != IGNORE_INDEX]) == (
            f"{word}<|im_end|>"
        )
        assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt) and labels[-1] == IGNORE_INDEX  # the "\n"
        assert feature["attention_mask"] == [1] * len(ids)


def test_eval_features_are_the_prompt_and_the_class(sst2_lm, lm_tokenizer, sst2_examples):
    train = sst2_lm.preprocess(sst2_examples, lm_tokenizer, max_length=MAX_LENGTH, train=True)
    features = sst2_lm.preprocess(sst2_examples, lm_tokenizer, max_length=MAX_LENGTH, train=False)
    assert features["labels"] == sst2_examples["label"]
    for prompt, full in zip(features["input_ids"], train["input_ids"], strict=True):
        assert lm_tokenizer.decode(prompt).endswith(ASSISTANT) and full[: len(prompt)] == prompt


def test_truncation_cuts_the_text_only(sst2_lm, squad_lm, lm_tokenizer):
    review = "a truly wonderful, moving and beautifully acted film " * 30
    examples = Dataset.from_dict({"sentence": [review], "label": [1], "idx": [0]})
    (train,) = sst2_lm.preprocess(examples, lm_tokenizer, max_length=72, train=True)
    (prompt,) = sst2_lm.preprocess(examples, lm_tokenizer, max_length=72, train=False)
    assert 70 <= len(train["input_ids"]) <= 72 and len(prompt["input_ids"]) == len(train["input_ids"]) - 3
    text = lm_tokenizer.decode(train["input_ids"])
    assert text.startswith(SYSTEM_START) and text.endswith(f"{ASSISTANT}positive<|im_end|>\n")
    kept = text.split("<|im_start|>user\n" + SST2_HEAD)[1].split(ASSISTANT)[0]
    assert 0 < len(kept) < len(review) and review.startswith(kept)
    assert train["input_ids"][: len(prompt["input_ids"])] == prompt["input_ids"]  # train and eval cut alike

    context = "The river flows through the old town and past the mill. " * 40
    squad = Dataset.from_dict({"id": ["q1"], "title": ["T"], "context": [context], "question": ["  Where is it?"],
                               "answers": [{"text": ["the old town"], "answer_start": [24]}]})  # fmt: skip
    (feature,) = squad_lm.preprocess(squad, lm_tokenizer, max_length=128, train=True)
    text = lm_tokenizer.decode(feature["input_ids"])
    assert len(feature["input_ids"]) <= 128
    assert text.endswith(f"\n\nQuestion: Where is it?{ASSISTANT}the old town<|im_end|>\n") and SQUAD_HEAD in text
    (prompt,) = squad_lm.preprocess(squad, lm_tokenizer, max_length=128, train=False)
    assert len(prompt["input_ids"]) <= 128 and prompt["example_id"] == "q1"
    assert lm_tokenizer.decode(prompt["input_ids"]).endswith(f"Question: Where is it?{ASSISTANT}")


def test_errors_for_a_small_max_length_and_multi_token_words(sst2_lm, lm_tokenizer, sst2_examples):
    with pytest.raises(ValueError, match=r"max_length=40 cannot hold the chat template"):
        sst2_lm.preprocess(sst2_examples, lm_tokenizer, max_length=40, train=True)
    odd = dataclasses.replace(sst2_lm, label_names=("negative", "so-so"))
    with pytest.raises(ValueError, match=r"label word 'so-so' is 3 tokens"):
        odd.preprocess(sst2_examples, lm_tokenizer, max_length=MAX_LENGTH, train=False)


def test_collator_pads_right_and_labels_with_minus_100(sst2_lm, lm_tokenizer, sst2_examples):
    features = sst2_lm.preprocess(sst2_examples.select(range(4)), lm_tokenizer, max_length=MAX_LENGTH, train=True)
    batch = sst2_lm.collator(lm_tokenizer)(list(features))
    lengths = [len(ids) for ids in features["input_ids"]]
    assert batch["input_ids"].shape == batch["labels"].shape == (4, max(lengths)) and len(set(lengths)) > 1
    for row, n in enumerate(lengths):
        assert batch["input_ids"][row, :n].tolist() == features[row]["input_ids"]
        assert batch["labels"][row, :n].tolist() == features[row]["labels"]
        assert (batch["input_ids"][row, n:] == lm_tokenizer.pad_token_id).all()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all() and batch["attention_mask"][row].sum() == n


# ---------------------------------------------------------------------- predictions
def test_log_likelihoods_match_an_unpadded_float64_reference(sst2_lm, lm_tokenizer, model, sst2_examples):
    features = sst2_lm.preprocess(sst2_examples, lm_tokenizer, max_length=MAX_LENGTH, train=False)
    kept, was_training = [], model.training
    handle = model.register_forward_hook(lambda _m, _i, out: kept.append(tuple(out.logits.shape)))
    try:
        predicted = sst2_lm.predict_outputs(model, features, lm_tokenizer, batch_size=3)
    finally:
        handle.remove()
    assert predicted.shape == (len(features), 2) and predicted.dtype == np.float64
    assert all(shape[1] == 1 for shape in kept) and len(kept) == 4  # logits_to_keep=1: never (b, length, vocab)
    label_ids = sst2_lm.label_token_ids(lm_tokenizer)
    assert label_ids == (17728, 16185)
    np.testing.assert_allclose(predicted, _reference_log_probs(model, features, label_ids), rtol=0, atol=1e-5)
    # order restoration: the same rows come back whatever the order and batching
    order = [7, 2, 9, 0, 5, 1, 8, 3, 6, 4]
    again = sst2_lm.predict_outputs(model, features.select(order), lm_tokenizer, batch_size=4)
    np.testing.assert_allclose(again, predicted[order], rtol=0, atol=1e-6)
    assert model.training == was_training
    metrics = sst2_lm.compute_metrics(predicted, features, sst2_examples)
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted.argmax(-1) == np.asarray(features["labels"])))


@pytest.mark.parametrize("wrapper", ["peft", "adapters"])
def test_wrapped_models_through_predict_outputs(wrapper, sst2_lm, lm_tokenizer, sst2_examples):
    wrapped = build_model("tiny-llama", sst2_lm, 0)
    features = sst2_lm.preprocess(sst2_examples.select(range(6)), lm_tokenizer, max_length=MAX_LENGTH, train=False)
    label_ids = sst2_lm.label_token_ids(lm_tokenizer)
    base = _reference_log_probs(wrapped, features, label_ids)
    with seeded(3):
        if wrapper == "peft":
            from peft import LoraConfig, get_peft_model

            wrapped = get_peft_model(wrapped, LoraConfig(task_type="CAUSAL_LM", target_modules=["q_proj", "v_proj"]))
            for name, param in wrapped.named_parameters():
                if "lora_B" in name:  # zero at init: make the adapter change the outputs
                    param.data.normal_(0, 0.5)
        else:
            import adapters

            adapters.init(wrapped)
            wrapped.add_adapter("x", config="seq_bn")
            wrapped.set_active_adapters("x")
            for name, param in wrapped.named_parameters():
                if "adapters.x" in name:
                    param.data.normal_(0, 0.5)
    wrapped.train()
    predicted = sst2_lm.predict_outputs(wrapped, features, lm_tokenizer, batch_size=4)
    assert wrapped.training  # the training flag is restored
    wrapped.eval()
    np.testing.assert_allclose(predicted, _reference_log_probs(wrapped, features, label_ids), rtol=0, atol=1e-5)
    assert np.abs(predicted - base).max() > 1e-3  # the adapter / LoRA weights were used


def test_squad_lm_generates_strings_like_an_unpadded_greedy_loop(squad_lm, lm_tokenizer, untied_model,
                                                                  squad_examples):  # fmt: skip
    features = squad_lm.preprocess(squad_examples, lm_tokenizer, max_length=160, train=False)
    answers = squad_lm.predict_outputs(untied_model, features, lm_tokenizer, batch_size=4)
    assert isinstance(answers, list) and len(answers) == len(features) and all(isinstance(a, str) for a in answers)
    assert answers == _reference_greedy(untied_model, features, lm_tokenizer, squad_lm.max_new_tokens)
    assert any(answers)  # not all empty: the comparison means something
    metrics = squad_lm.compute_metrics(answers, features, squad_examples)
    assert set(metrics) == {"exact_match", "f1"} and 0.0 <= metrics["f1"] <= 100.0


def test_squad_lm_metrics_and_stats_on_hand_made_answers(squad_lm, lm_tokenizer, squad_examples):
    from bench.metrics.squad.squad import exact_match_score, f1_score, max_over_golds

    features = squad_lm.preprocess(squad_examples, lm_tokenizer, max_length=160, train=False)
    golds = [a["text"] for a in squad_examples["answers"]]
    answers = [golds[0][0], f"The {golds[1][0].upper()}.", "nothing like it", "", golds[4][-1] + " and more",
               golds[5][0].split()[0]]  # fmt: skip
    metrics = squad_lm.compute_metrics(answers, features, squad_examples)
    for key, score in (("exact_match", exact_match_score), ("f1", f1_score)):
        expected = 100.0 * np.mean([max_over_golds(score, a, g) for a, g in zip(answers, golds, strict=True)])
        assert metrics[key] == pytest.approx(expected)
        stats = example_stats(squad_lm, answers, features, squad_examples, headline=key)
        assert stats["kind"] == "mean" and len(stats["rows"]) == len(squad_examples)
        assert metric_from_stats(stats["kind"], stats["rows"]) == pytest.approx(metrics[key])
    assert metrics["exact_match"] >= 100.0 * 2 / 6 and 0.0 < metrics["f1"] < 100.0
    assert majority_baseline(squad_lm, features, squad_examples) == 0.0


def test_sst2_lm_stats_and_baseline_match_the_metric(sst2_lm, lm_tokenizer, data_dir, seed):
    examples = sst2_lm.load("validation", data_dir).select(range(60))
    features = sst2_lm.preprocess(examples, lm_tokenizer, max_length=MAX_LENGTH, train=False)
    predictions = np.random.default_rng(seed).normal(size=(len(features), 2)) - 10.0
    metrics = sst2_lm.compute_metrics(predictions, features, examples)
    stats = example_stats(sst2_lm, predictions, features, examples)
    assert stats["kind"] == "mean" and len(stats["rows"]) == len(examples)
    assert metric_from_stats(stats["kind"], stats["rows"]) == pytest.approx(metrics["accuracy"], abs=1e-12)
    labels = np.asarray(examples["label"])
    assert majority_baseline(sst2_lm, features, examples) == pytest.approx(max(labels.mean(), 1 - labels.mean()))
    with pytest.raises(ValueError, match=r"predictions must be \(n, 2\)"):
        sst2_lm.compute_metrics(predictions[:, :1], features, examples)


def test_experiment_dispatches_to_the_task_prediction(sst2_lm, lm_tokenizer, model, sst2_examples, tmp_path):
    from bench.evaluation import model_predictions

    features = sst2_lm.preprocess(sst2_examples.select(range(4)), lm_tokenizer, max_length=MAX_LENGTH, train=False)
    cfg = SimpleNamespace(eval_batch_size=2)
    got = model_predictions(model, sst2_lm, lm_tokenizer, features, cfg, tmp_path, False)
    np.testing.assert_array_equal(got, sst2_lm.predict_outputs(model, features, lm_tokenizer, batch_size=2))


@pytest.mark.slow
def test_smollm2_scores_sst2_lm_well_above_chance(sst2_lm, sst2_examples, data_dir):
    """The real SmolLM2-135M-Instruct, zero-shot: the prompt and the label words make sense to it."""
    tokenizer = load_tokenizer("smollm2", sst2_lm)
    smollm2 = build_model("smollm2", sst2_lm, 0)
    examples = sst2_lm.load("validation", data_dir).select(range(16))
    features = sst2_lm.preprocess(examples, tokenizer, max_length=MAX_LENGTH, train=False)
    predicted = sst2_lm.predict_outputs(smollm2, features, tokenizer, batch_size=8)
    reference = _reference_log_probs(smollm2, features.select(range(3)), sst2_lm.label_token_ids(tokenizer))
    np.testing.assert_allclose(predicted[:3], reference, rtol=0, atol=1e-4)
    assert np.logaddexp(predicted[:, 0], predicted[:, 1]).min() > np.log(0.05)  # the label words are likely answers
    assert sst2_lm.compute_metrics(predicted, features, examples)["accuracy"] >= 0.65
