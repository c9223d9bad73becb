"""Shift sets (bench.shift): the registry, specs, schema checks, entity restriction, and RunConfig's resolution."""

from __future__ import annotations

import random

import pytest

from bench import shift
from bench.experiment import RunConfig
from bench.tasks import get_task, task_names


def _write(path, rows: dict, features=None):
    from datasets import Dataset

    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path


def _sst2_rows(n: int, rng: random.Random) -> dict:
    words = ["good", "bad", "film", "plot", "dull", "great", "not", "very"]
    return {"sentence": [" ".join(rng.choices(words, k=rng.randint(2, 9))) for _ in range(n)],
            "label": [rng.randint(0, 1) for _ in range(n)], "idx": list(range(n))}  # fmt: skip


def test_registry_names_real_tasks_and_files(data_dir):
    assert len({s.name for s in shift.SHIFT_SETS}) == len(shift.SHIFT_SETS)
    for entry in shift.SHIFT_SETS:
        assert entry.task in task_names()
        path = entry.file(data_dir)
        assert path.is_file(), path
        task = get_task(entry.task)
        from datasets import load_dataset

        rows = load_dataset("parquet", data_files={"test": str(path)}, split="test")
        shift.check_schema(rows, task, entry.name)  # the shipped sets pass their own task's check
    assert shift.default_specs("sst2") == ("uci_amazon", "uci_imdb", "uci_yelp", "mpqa")
    assert shift.default_specs("conll2003") == ("wnut17", "conllpp")
    assert shift.default_specs("cola") == ()
    assert [s.role for s in shift.registered("conll2003")] == ["shift", "label_noise"]


def test_parse_spec_and_cli_errors(tmp_path):
    assert shift.parse_spec("mpqa", "sst2").path == "ood/mpqa/test.parquet"
    custom = shift.parse_spec("mine=/x/test.parquet", "sst2")
    assert (custom.name, custom.task, custom.path, custom.role) == ("mine", "sst2", "/x/test.parquet", "shift")
    with pytest.raises(ValueError, match=r"unknown shift set 'mpqa' for task 'stsb'; registered for it: sick_stsb"):
        shift.parse_spec("mpqa", "stsb")
    with pytest.raises(ValueError, match="registered set's name"):
        shift.parse_spec("mpqa=/x.parquet", "sst2")
    with pytest.raises(ValueError, match="shift set name"):
        shift.parse_spec("bad name=/x.parquet", "sst2")
    for bad in ("sst2", "sst2:mine", "sst2:=x", "sst2:mine=", ":mine=x"):
        with pytest.raises(ValueError, match="TASK:NAME=PATH"):
            shift.parse_cli_shift(bad)
    with pytest.raises(ValueError, match="unknown task 'sst3'"):
        shift.parse_cli_shift("sst3:mine=/x.parquet")
    task, spec = shift.parse_cli_shift(f"sst2:mine={tmp_path}/../{tmp_path.name}/a.parquet")
    assert task == "sst2" and spec == f"mine={tmp_path / 'a.parquet'}"  # absolute and normalised


def test_check_schema_names_file_column_and_expected(tmp_path, seed):
    from datasets import ClassLabel, Features, Sequence, Value

    rng = random.Random(seed)
    sst2, stsb, conll = get_task("sst2"), get_task("stsb"), get_task("conll2003")
    rows = _sst2_rows(12, rng)
    extra = {**rows, "source": ["x"] * 12}  # an extra column is fine
    ds = _load(_write(tmp_path / "ok.parquet", extra))
    shift.check_schema(ds, sst2, "ok")
    missing = _load(_write(tmp_path / "m.parquet", {"text": rows["sentence"], "label": rows["label"]}))
    with pytest.raises(ValueError, match=r"shift set m: column 'sentence' \(text\) expected by task 'sst2' is "
                                         r"missing; columns found: \['text', 'label'\]"):  # fmt: skip
        shift.check_schema(missing, sst2, "m")
    other = Features({"sentence": Value("string"), "label": ClassLabel(names=["pos", "neg"]), "idx": Value("int64")})
    with pytest.raises(
        ValueError, match=r"label names \['pos', 'neg'\]; task 'sst2' expects \['negative', 'positive'\]"
    ):
        shift.check_schema(_load(_write(tmp_path / "o.parquet", rows, other)), sst2, "o")
    out_of_range = {**rows, "label": [2, *rows["label"][1:]]}
    with pytest.raises(ValueError, match=r"holds \[2\], not label ids 0..1"):
        shift.check_schema(_load(_write(tmp_path / "r.parquet", out_of_range)), sst2, "r")
    pairs = {"sentence1": rows["sentence"], "sentence2": rows["sentence"][::-1], "label": rows["label"]}
    labelled = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                         "label": ClassLabel(names=["a", "b"])})  # fmt: skip
    with pytest.raises(ValueError, match="expects a float score"):
        shift.check_schema(_load(_write(tmp_path / "s.parquet", pairs, labelled)), stsb, "s")
    tags = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=["O", "B-X"]))})
    ner = {"tokens": [["a", "b"], ["c"]], "ner_tags": [[0, 1], [0]]}
    with pytest.raises(ValueError, match=r"column 'ner_tags' has label names \['O', 'B-X'\]"):
        shift.check_schema(_load(_write(tmp_path / "n.parquet", ner, tags)), conll, "n")
    with pytest.raises(ValueError, match=r"column 'ner_tags' holds \[9\]"):
        shift.check_schema(_load(_write(tmp_path / "i.parquet", {"tokens": [["a"]], "ner_tags": [[9]]})), conll, "i")
    with pytest.raises(ValueError, match="no shift-set support"):
        shift.task_columns(get_task("squad"))


def _load(path):
    from datasets import load_dataset

    return load_dataset("parquet", data_files={"test": str(path)}, split="test")


def test_load_missing_registered_file_is_none_missing_absolute_file_raises(tmp_path):
    entry = shift.parse_spec("mpqa", "sst2")
    assert shift.load(entry, get_task("sst2"), tmp_path) is None
    assert shift.load(entry, get_task("sst2"), None) is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        shift.load(shift.parse_spec(f"mine={tmp_path}/none.parquet", "sst2"), get_task("sst2"), None)


def test_shift_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(shift.SHIFT_DIR_ENV, raising=False)
    monkeypatch.delenv("HYBRIDFT_DATA_DIR", raising=False)
    assert shift.shift_root(None) is None
    assert shift.shift_root(tmp_path) == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv(shift.SHIFT_DIR_ENV, str(other))
    assert shift.shift_root(tmp_path) == other
    assert shift.shift_root(tmp_path, tmp_path) == tmp_path  # the argument wins
    with pytest.raises(FileNotFoundError, match="not a directory"):
        shift.shift_root(None, tmp_path / "absent")


def test_restrict_entities_drops_other_types_only(seed):
    rng = random.Random(seed)
    names = get_task("conll2003").label_names
    tags = [[rng.choice(names) for _ in range(rng.randint(1, 12))] for _ in range(50)]
    restricted = shift.restrict_entities(tags, ("PER", "LOC", "ORG"))
    for row, new in zip(tags, restricted, strict=True):
        for old, tag in zip(row, new, strict=True):
            assert tag == ("O" if old.endswith("MISC") else old)


def test_entity_metrics_count_only_the_kept_types(seed):
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(seed)
    task = get_task("conll2003")
    names = task.label_names
    gold = [[rng.choice(names[:7]) for _ in range(rng.randint(1, 10))] for _ in range(80)]  # no MISC, like WNUT
    predicted = [[rng.choice(names) for _ in row] for row in gold]
    scores = shift.entity_metrics(task, predicted, gold, ("PER", "LOC", "ORG"))
    tp = fp = fn = 0
    for p, g in zip(predicted, gold, strict=True):
        ps = {e for e in get_entities(p) if e[0] != "MISC"}
        gs = set(get_entities(g))
        tp, fp, fn = tp + len(ps & gs), fp + len(ps - gs), fn + len(gs - ps)
    assert scores["plo_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert scores["plo_precision"] == pytest.approx(tp / (tp + fp), abs=1e-12)
    assert shift.entity_prefix(("PER", "LOC", "ORG")) == "plo"


def test_runconfig_resolves_shifts_and_keeps_hashes_of_tasks_without_sets():
    cfg = RunConfig(task="sst2", method="plain", seed=0, model="tiny-bert")
    assert cfg.shifts == shift.default_specs("sst2")
    assert RunConfig(**{**cfg.to_dict(), "method_args": ()}).config_hash() == cfg.config_hash()  # round trip
    none = RunConfig(task="sst2", method="plain", seed=0, model="tiny-bert", shifts=[])
    assert none.shifts == () and none.config_hash() != cfg.config_hash()
    assert RunConfig(task="sst2", method="plain", seed=0, model="tiny-bert", shift_size=10).config_hash() != \
        cfg.config_hash()  # fmt: skip
    dev = RunConfig(task="sst2", method="plain", seed=0, model="tiny-bert", dev_size=10, eval_on="dev")
    assert dev.shifts == ()
    cola = RunConfig(task="cola", method="plain", seed=0, model="tiny-bert")
    data = cola.to_dict()
    del data["data_dir"], data["shift_dir"], data["shifts"], data["shift_size"]
    import hashlib
    import json

    before = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":"), default=repr).encode())
    assert cola.config_hash() == before.hexdigest()[:16]  # what a record made before shift sets existed carries
    assert RunConfig(task="sst2", method="plain", seed=0, model="tiny-bert", shift_dir="/a").config_hash() == \
        cfg.config_hash()  # fmt: skip
    with pytest.raises(ValueError, match="scored only with eval_on='eval'"):
        RunConfig(task="sst2", method="plain", seed=0, model="tiny-bert", dev_size=10, eval_on="dev", shifts=["mpqa"])
    with pytest.raises(ValueError, match="names a set twice"):
        RunConfig(task="sst2", method="plain", seed=0, model="tiny-bert", shifts=["mpqa", "mpqa"])
    with pytest.raises(ValueError, match="shift_size must be None or an integer >= 1"):
        RunConfig(task="sst2", method="plain", seed=0, model="tiny-bert", shift_size=0)
    with pytest.raises(ValueError, match="must be a list"):
        RunConfig(task="sst2", method="plain", seed=0, model="tiny-bert", shifts="mpqa")
    with pytest.raises(ValueError, match="unknown shift set 'wnut17' for task 'sst2'"):
        RunConfig(task="sst2", method="plain", seed=0, model="tiny-bert", shifts=["wnut17"])
