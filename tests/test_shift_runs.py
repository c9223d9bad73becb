"""Runs scored on shift sets (tiny-bert, real data): the record's shift_metrics, skipped sets, α points, and the
length-sorted prediction that scoring uses."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bench import experiment, shift
from bench.experiment import RunConfig
from bench.scoring import metric_from_stats
from bench.tasks import get_task


def _cfg(data_dir, **kw):
    fields = dict(task="sst2", method="plain", seed=1, model="tiny-bert", train_size=24, eval_size=16, max_length=32,
                  epochs=1.0, batch_size=8, shift_size=20, data_dir=str(data_dir))  # fmt: skip
    return RunConfig(**{**fields, **kw})


def _own_set(tmp_path, seed: int, n: int = 30):
    from datasets import ClassLabel, Dataset, Features, Value

    rng = random.Random(seed)
    words = ["a", "fine", "awful", "movie", "great", "plot", "so", "not"]
    rows = {"sentence": [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(n)],
            "label": [rng.randint(0, 1) for _ in range(n)], "extra": list(range(n))}  # fmt: skip
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"]),
                         "extra": Value("int64")})  # fmt: skip
    path = tmp_path / "own" / "test.parquet"
    path.parent.mkdir(parents=True)
    Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path, rows


@pytest.mark.slow
def test_record_carries_every_shift_set_with_stats_baseline_and_subset(tmp_path, data_dir, seed):
    path, rows = _own_set(tmp_path, seed)
    cfg = _cfg(data_dir, shifts=[*shift.default_specs("sst2"), f"own={path}"])
    result = experiment.run_experiment(cfg, work_dir=tmp_path / "w", cache_dir=tmp_path / "c", progress=False)
    assert list(result["shift_metrics"]) == ["uci_amazon", "uci_imdb", "uci_yelp", "mpqa", "own"]
    assert result["shift_skipped"] == [] and result["shift_eval_time_s"] > 0
    for name, entry in result["shift_metrics"].items():
        assert entry["role"] == "shift" and entry["headline_metric"] == "accuracy"
        assert entry["subset"]["size"] == 20 and entry["subset"]["split"] == f"shift:{name}"
        assert metric_from_stats(entry["eval_stats"]["kind"], entry["eval_stats"]["rows"]) == pytest.approx(
            entry["headline"], abs=1e-12
        )
        assert entry["failed_to_learn"] is (entry["headline"] <= entry["majority_baseline"] + 1e-12)
    own = result["shift_metrics"]["own"]
    chosen = np.sort(np.random.default_rng(experiment.EVAL_SUBSET_SEED).permutation(30)[:20])
    labels = np.asarray(rows["label"])[chosen]
    assert own["majority_baseline"] == pytest.approx(max(labels.mean(), 1 - labels.mean()))
    again = experiment.run_experiment(cfg, work_dir=tmp_path / "w2", cache_dir=tmp_path / "c", progress=False)
    assert again["shift_metrics"]["mpqa"]["subset"] == result["shift_metrics"]["mpqa"]["subset"]  # fixed per set


@pytest.mark.slow
def test_wnut_headline_is_per_loc_org_f1_and_conllpp_is_label_noise(tmp_path, data_dir):
    cfg = _cfg(data_dir, task="conll2003", shift_size=24)
    result = experiment.run_experiment(cfg, work_dir=tmp_path / "w", cache_dir=tmp_path / "c", progress=False)
    wnut, conllpp = result["shift_metrics"]["wnut17"], result["shift_metrics"]["conllpp"]
    assert (wnut["role"], conllpp["role"]) == ("shift", "label_noise")
    assert wnut["headline_metric"] == "plo_f1" and "f1" in wnut["metrics"] and "MISC_f1" in wnut["metrics"]
    assert wnut["headline"] == wnut["metrics"]["plo_f1"]
    assert metric_from_stats("f1_counts", wnut["eval_stats"]["rows"]) == pytest.approx(wnut["headline"], abs=1e-12)
    assert conllpp["headline_metric"] == "f1"


@pytest.mark.slow
def test_missing_shift_folder_skips_registered_sets_with_one_line(tmp_path, data_dir, capsys, monkeypatch):
    only_glue = tmp_path / "data" / "glue"
    only_glue.mkdir(parents=True)
    (only_glue / "sst2").symlink_to(data_dir / "glue" / "sst2")
    monkeypatch.delenv(shift.SHIFT_DIR_ENV, raising=False)
    experiment._SKIP_NOTICES.clear()
    cfg = _cfg(tmp_path / "data")
    data = experiment.prepare_data(cfg)
    assert data.shifts == [] and data.shift_skipped == list(shift.default_specs("sst2"))
    experiment.prepare_data(cfg)
    lines = [line for line in capsys.readouterr().out.splitlines() if "shift sets of sst2 skipped" in line]
    assert len(lines) == 1 and "uci_amazon, uci_imdb, uci_yelp, mpqa" in lines[0]
    found = experiment.prepare_data(_cfg(tmp_path / "data", shift_dir=str(data_dir)))  # read from a folder of its own
    assert [p.shift.name for p in found.shifts] == list(shift.default_specs("sst2"))


@pytest.mark.slow
def test_alpha_sweep_points_carry_shift_headlines(tmp_path, data_dir):
    cfg = _cfg(data_dir, method="wise_ft", shifts=["uci_yelp"])
    curve = experiment.alpha_sweep(cfg, (0.0, 1.0), work_dir=tmp_path / "w", cache_dir=tmp_path / "c", progress=False)
    for point in curve:
        entry = point["shift"]["uci_yelp"]
        assert 0.0 <= entry["headline"] <= 1.0 and "eval_stats" not in entry


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sst2", "conll2003"])
def test_length_sorted_prediction_equals_prediction_in_order(tmp_path, data_dir, task):
    from hybridft.fitting import predict
    from hybridft.models import build_model, load_tokenizer

    spec = get_task(task)
    tokenizer = load_tokenizer("tiny-bert")
    examples = spec.load("validation", data_dir).select(range(37))
    features = spec.preprocess(examples, tokenizer, max_length=48, train=False)
    model = build_model("tiny-bert", spec, seed=0)
    kwargs = dict(batch_size=8, output_dir=tmp_path, progress=False)
    plain = predict(model, features, spec.collator(tokenizer), by_length=False, **kwargs)
    sorted_ = predict(model, features, spec.collator(tokenizer), by_length=True, **kwargs)
    plain, sorted_ = np.asarray(plain), np.asarray(sorted_)
    assert sorted_.shape == plain.shape
    for i, ids in enumerate(features["input_ids"]):  # token logits: compare each row's own positions only
        row = (slice(None),) if plain.ndim == 2 else (slice(0, len(ids)),)
        np.testing.assert_allclose(sorted_[i][row], plain[i][row], rtol=1e-4, atol=1e-5)
