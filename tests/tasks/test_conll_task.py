"""CoNLL-2003 on the real local data: first-subword labels and KD mask, word reconstruction, word-level scoring."""

from __future__ import annotations

import numpy as np
import pytest
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

from bench.data import subset
from bench.tasks import get_task
from bench.tasks.conll import KD_MASK_COLUMN, NER_TAGS, first_subword_labels, first_subword_mask, word_predictions
from hybridft.distill import TokenRows


@pytest.fixture(scope="module")
def conll(data_dir):
    task = get_task("conll2003")
    examples = subset(task.load("validation", data_dir), 120, 7, task="conll2003", split="validation")[0]
    return task, examples


def _one_hot(tag_rows, length, num_labels, rng):
    logits = rng.normal(size=(len(tag_rows), length, num_labels))  # noise everywhere, padding included
    for i, tags in enumerate(tag_rows):
        for j, tag in enumerate(tags):
            if tag >= 0:
                logits[i, j, tag] = 50.0
    return logits


def test_label_names_come_from_the_data(conll):
    task, examples = conll
    assert tuple(examples.features["ner_tags"].feature.names) == task.label_names == NER_TAGS


def test_words_and_labels_are_reconstructed_from_subwords(conll, tokenizer):
    task, examples = conll
    features = task.preprocess(examples, tokenizer, max_length=128, train=False)
    normalize = tokenizer.backend_tokenizer.normalizer.normalize_str
    checked = 0
    for example, feature in zip(examples, features, strict=True):
        tokens = tokenizer.convert_ids_to_tokens(feature["input_ids"])
        pieces: dict[int, list[str]] = {}
        for token, word, label in zip(tokens, feature["word_ids"], feature["labels"], strict=True):
            if word is None:
                assert label == -100 and token in (tokenizer.cls_token, tokenizer.sep_token)
                continue
            if word in pieces:
                assert label == -100  # only the first subword is labelled
                pieces[word].append(token.removeprefix("##"))
            else:
                assert label == example["ner_tags"][word]
                pieces[word] = [token]
        assert sorted(pieces) == list(range(len(example["tokens"])))  # every word present, none truncated here
        for index, word in enumerate(example["tokens"]):
            if pieces[index] != [tokenizer.unk_token]:
                assert "".join(pieces[index]) == normalize(word).replace(" ", "")
                checked += 1
    assert checked > 1000


def test_train_features_have_no_word_ids_and_collator_pads_labels(conll, tokenizer):
    task, examples = conll
    train = task.preprocess(examples, tokenizer, max_length=64, train=True)
    assert train.column_names == ["input_ids", "token_type_ids", "attention_mask", "labels", "kd_mask"]
    evaluation = task.preprocess(examples, tokenizer, max_length=64, train=False)
    assert evaluation.column_names == [*train.column_names, "word_ids"]
    batch = task.collator(tokenizer)([evaluation[i] for i in range(6)])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}  # no word_ids, no kd_mask
    lengths = [len(evaluation[i]["input_ids"]) for i in range(6)]
    assert batch["labels"].shape == (6, max(lengths))
    for i, length in enumerate(lengths):
        assert batch["labels"][i, :length].tolist() == evaluation[i]["labels"]
        assert (batch["labels"][i, length:] == -100).all()


@pytest.mark.parametrize("train", [True, False])
def test_kd_mask_marks_exactly_the_first_subword_of_every_kept_word(conll, tokenizer, train):
    """One KD position per word whatever its subword count, none on [CLS]/[SEP]; truncated words have none."""
    task, examples = conll
    assert TokenRows.mask_column == KD_MASK_COLUMN
    for max_length in (128, 12):
        features = task.preprocess(examples, tokenizer, max_length=max_length, train=train)
        word_ids = [
            tokenizer(e["tokens"], is_split_into_words=True, truncation=True, max_length=max_length).word_ids()
            for e in examples
        ]
        split_words = truncated = 0
        for feature, ids, example in zip(features, word_ids, examples, strict=True):
            mask = feature[KD_MASK_COLUMN]
            assert len(mask) == len(feature["input_ids"]) == len(ids)
            assert mask[0] == mask[-1] == 0  # [CLS], [SEP]
            first = [p for p, w in enumerate(ids) if w is not None and (p == 0 or ids[p - 1] != w)]
            assert [p for p, m in enumerate(mask) if m] == first
            kept = {w for w in ids if w is not None}
            assert sum(mask) == len(kept)  # one position per (non-truncated) word
            if max_length == 128:
                assert sum(mask) == len(example["tokens"])  # nothing truncated at 128
            truncated += len(kept) < len(example["tokens"])
            split_words += sum(1 for w in kept if ids.count(w) > 1)
            labelled = [p for p, label in enumerate(feature["labels"]) if label != -100]
            assert labelled == first  # the labels sit on the same positions
        assert split_words > 50  # many words have several subwords and still one position
        assert (truncated > 0) == (max_length == 12)


def test_gold_logits_score_perfectly(conll, tokenizer, seed):
    task, examples = conll
    features = task.preprocess(examples, tokenizer, max_length=128, train=False)
    logits = _one_hot(features["labels"], 140, task.num_labels, np.random.default_rng(seed))
    scores = task.compute_metrics(logits, features, examples)
    assert scores["f1"] == scores["precision"] == scores["recall"] == scores["accuracy"] == 1.0
    assert scores["PER_number"] > 0 and scores["PER_f1"] == 1.0


def test_random_predictions_match_seqeval(conll, tokenizer, seed):
    task, examples = conll
    features = task.preprocess(examples, tokenizer, max_length=128, train=False)
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(features), 130, task.num_labels))
    scores = task.compute_metrics(logits, features, examples)
    predicted, gold = [], []
    for row, feature, example in zip(logits.argmax(-1), features, examples, strict=True):
        first = {}
        for position, word in enumerate(feature["word_ids"]):
            if word is not None and word not in first:
                first[word] = NER_TAGS[row[position]]
        predicted.append([first[w] for w in range(len(example["tokens"]))])
        gold.append([NER_TAGS[t] for t in example["ner_tags"]])
    assert scores["f1"] == pytest.approx(f1_score(gold, predicted), abs=1e-12)
    assert scores["precision"] == pytest.approx(precision_score(gold, predicted), abs=1e-12)
    assert scores["recall"] == pytest.approx(recall_score(gold, predicted), abs=1e-12)
    assert scores["accuracy"] == pytest.approx(accuracy_score(gold, predicted), abs=1e-12)
    assert 0 < scores["f1"] < 0.5


def test_truncated_words_count_as_o_against_the_full_gold(conll, tokenizer, seed):
    task, examples = conll
    features = task.preprocess(examples, tokenizer, max_length=12, train=False)
    truncated = [
        i
        for i, f in enumerate(features)
        if max(w for w in f["word_ids"] if w is not None) + 1 < len(examples[i]["tokens"])
    ]
    assert truncated
    logits = _one_hot(features["labels"], 12, task.num_labels, np.random.default_rng(seed))
    tags = task.word_tags(logits, features, examples)
    for i in truncated:
        kept = max(w for w in features[i]["word_ids"] if w is not None) + 1
        assert len(tags[i]) == len(examples[i]["tokens"])
        assert tags[i][:kept] == [NER_TAGS[t] for t in examples[i]["ner_tags"][:kept]]
        assert set(tags[i][kept:]) == {"O"}
    assert task.compute_metrics(logits, features, examples)["recall"] < 1.0


def test_alignment_helpers():
    assert first_subword_labels([None, 0, 0, 1, None], [3, 4]) == [-100, 3, -100, 4, -100]
    assert first_subword_mask([None, 0, 0, 1, 2, 2, 2, None]) == [0, 1, 0, 1, 1, 0, 0, 0]
    assert first_subword_mask([None, None]) == [0, 0]
    assert word_predictions(np.array([8, 1, 2, 5, 0]), [None, 0, 0, 1, None], 3) == [1, 5, -1]


def test_bad_inputs_are_refused(conll, tokenizer):
    task, examples = conll
    features = task.preprocess(examples.select(range(4)), tokenizer, max_length=64, train=False)
    with pytest.raises(ValueError, match=r"logits must be \(n, seq_len, 9\)"):
        task.compute_metrics(np.ones((4, 64)), features, examples.select(range(4)))
    with pytest.raises(ValueError, match="seq_len"):
        task.compute_metrics(np.ones((4, 3, 9)), features, examples.select(range(4)))
    train = task.preprocess(examples.select(range(4)), tokenizer, max_length=64, train=True)
    with pytest.raises(ValueError, match="word_ids"):
        task.compute_metrics(np.ones((4, 64, 9)), train, examples.select(range(4)))
