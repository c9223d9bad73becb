"""The ``hybridft`` command end to end: ``train`` on small CSV files with every saving method, the folders it writes
reloaded by bare transformers in a fresh process, ``mix`` against a float64 reference, and every bad input refused
with exit code 2 and one line naming the argument and the value."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hybridft.cli import main
from hybridft.distill import weights_hash
from hybridft.methods.peft_methods import adapters_missing
from hybridft.trainer_config import HybridTrainingArguments
from hybridft.user_data import InputError, Labels
from hybridft.user_runs import HYBRID_FLAGS, METHODS, TrainConfig, staged_output

# datasets' CSV builder (datasets 5.0, packaged_modules/csv) never closes the pandas reader it opens per file.
pytestmark = pytest.mark.filterwarnings(r"ignore:unclosed file <_io\.BufferedReader name='.*\.csv'>:ResourceWarning")

WORDS = {"neg": ["bad", "awful", "poor", "dull", "weak"], "pos": ["good", "great", "fine", "lovely", "strong"]}
COLUMNS = ("text", "pair", "label", "score")
TRAIN_ROWS, EVAL_ROWS, UNLABELED_ROWS = 24, 12, 8
# Small and short: one epoch of tiny-bert at 32 tokens takes about a second on a 2-core CPU.
FAST = ["--model", "tiny-bert", "--epochs", "1", "--max-length", "32", "--batch-size", "8", "--no-progress"]


def _rows(n: int, rng: np.random.Generator) -> list[dict]:
    rows = []
    for i in range(n):
        label = ("neg", "pos")[i % 2]
        words = rng.choice(WORDS[label], size=2)
        rows.append(
            {
                "text": f"the film was {words[0]}",
                "pair": f"and the cast {words[1]}",
                "label": label,
                "score": round(float(rng.uniform(0, 5)), 3),
            }
        )
    return rows


def _write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """train.csv, eval.csv (text, pair, label, score) and unlabeled.csv (text, pair), drawn once per module."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(20240611)
    return {
        "train": _write_csv(folder / "train.csv", _rows(TRAIN_ROWS, rng)),
        "eval": _write_csv(folder / "eval.csv", _rows(EVAL_ROWS, rng)),
        "unlabeled": _write_csv(folder / "unlabeled.csv", _rows(UNLABELED_ROWS, rng), ("text", "pair")),
    }


def _args(command: str, *extra: str, **flags) -> list[str]:
    """``command --flag value ...`` (flag names with underscores for dashes), then ``extra``."""
    return [command, *[x for name, value in flags.items() for x in (f"--{name.replace('_', '-')}", str(value))], *extra]


def _train_args(data: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return _args("train", *FAST, *extra, train=data["train"], eval=data["eval"], text_column="text", output=output)


# The adapter method needs AdapterHub's `adapters`, an optional extra that does not import on transformers 5.
TRAINED = ("plain", "lora", "hybrid") + (("adapter",) if adapters_missing() is None else ())


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, Path]:
    """The output folder of one ``hybridft train`` run per saving method (text pairs; hybrid also gets unlabeled
    inputs and a teacher cache of its own)."""
    folders = {}
    for method in TRAINED:
        extra = ["--method", method, "--text-pair-column", "pair"]
        if method == "hybrid":
            extra += ["--unlabeled", str(data["unlabeled"]), "--teacher-cache-dir", str(tmp_path_factory.mktemp("t"))]
        folders[method] = tmp_path_factory.mktemp(method) / "out"
        assert main(_train_args(data, folders[method], *extra)) == 0
    return folders


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("method", TRAINED)
def test_train_writes_metrics_record_and_card(runs, data, method):
    folder = runs[method]
    saved = ["adapter", "base"] if method == "adapter" else ["model"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*saved, "README.md", "metrics.json", "predictions.jsonl", "record.json"]
    )
    assert not list(folder.parent.glob(".*partial*")), "the staging folder was left behind"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) >= {"accuracy", "macro_f1", "eval_loss", "train_time_s", "eval_examples", "train_examples"}
    assert metrics["eval_examples"] == EVAL_ROWS and metrics["train_examples"] == TRAIN_ROWS
    assert 0 <= metrics["accuracy"] <= 1 and np.isfinite(metrics["eval_loss"])
    record = json.loads((folder / "record.json").read_text())
    assert record["method"]["name"] == method
    assert record["method"]["learning_rate"] == METHODS[method].learning_rate
    assert record["labels"] == {"task_type": "classification", "names": ["neg", "pos"], "column": "label"}
    for name in ("train", "eval"):
        assert record["data"][name]["rows"] == {"train": TRAIN_ROWS, "eval": EVAL_ROWS}[name]
        assert record["data"][name]["sha256"] == _sha256(data[name])
    assert record["metrics"] == metrics
    assert record["compute"]["train_tokens"] > 0 and record["compute"]["train_flops"] > 0
    assert record["compute"]["optimizer_steps"] == sum(s["optimizer_steps"] for s in record["stages"]) > 0
    assert record["provenance"]["versions"]["transformers"]
    card = (folder / "README.md").read_text()
    assert f"| accuracy | {metrics['accuracy']:.4f} |" in card
    assert ("load_adapter" if method == "adapter" else 'from_pretrained("model")') in card


def test_hybrid_record_names_its_teachers(runs):
    record = json.loads((runs["hybrid"] / "record.json").read_text())
    assert [s["stage"] for s in record["stages"]] == ["lp", "lp_ft", "teacher_logits", "student"]
    assert record["teachers"]["stages"] == ["lp", "lp_ft", "teacher_logits"]
    assert set(record["teachers"]["provenance"]) >= {"pre", "fine"}
    settings = record["method"]["settings"]
    assert settings["alpha"] == 0.5 and settings["beta"] == settings["gamma"] == 1.0
    assert settings["task_type"] == "classification"
    assert record["data"]["unlabeled"]["rows"] == UNLABELED_ROWS
    # Both teachers ran once over the training and the unlabeled inputs.
    assert record["stages"][2]["samples"] == 2 * (TRAIN_ROWS + UNLABELED_ROWS)
    scores = record["teacher_scores"]  # θ_pre: the probe's cross-validated score; both: the eval file's
    assert scores["pre"]["dev_source"] == "cv:3" and 0.0 <= scores["pre"]["dev"] <= 1.0
    assert all(0.0 <= scores[name]["eval"] <= 1.0 for name in ("pre", "fine"))
    assert record["teachers"]["provenance"]["lp"]["probe"]["selection"] == "cv:3"


def test_removed_probe_flags_name_their_replacement(data, tmp_path, capsys):
    try:
        code = main(_train_args(data, tmp_path / "o", "--lp-epochs", "2"))
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert "--lp-epochs was removed" in err and "--lp-folds" in err
    assert not (tmp_path / "o").exists()


def test_lora_folder_is_merged(runs):
    from safetensors import safe_open

    with safe_open(str(runs["lora"] / "model" / "model.safetensors"), framework="pt") as weights:
        keys = list(weights.keys())
    assert keys and not [k for k in keys if "lora" in k or "modules_to_save" in k or "base_model" in k]


# Loads output folders with transformers (and adapters) only, as the model card says, and prints each evaluation
# row's logits per folder; it fails if anything imported hybridft.
RELOAD = r"""
import csv, json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

eval_csv, folders = sys.argv[1], json.loads(sys.argv[2])
out = {}
for method, folder in folders.items():
    if method == "adapter":
        import adapters

        model = AutoModelForSequenceClassification.from_pretrained(folder + "/base")
        adapters.init(model)
        model.load_adapter(folder + "/adapter", set_active=True)
        tokenizer = AutoTokenizer.from_pretrained(folder + "/base")
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder + "/model")
        tokenizer = AutoTokenizer.from_pretrained(folder + "/model")
    model.eval()
    logits = []
    with torch.no_grad():
        for row in csv.DictReader(open(eval_csv)):
            inputs = tokenizer(row["text"], row["pair"], truncation=True, max_length=32, return_tensors="pt")
            logits.append(model(**inputs).logits[0].tolist())
    out[method] = {"logits": logits, "id2label": model.config.id2label}
assert not [m for m in sys.modules if m.split(".")[0] == "hybridft"]
print(json.dumps(out))
"""


def test_saved_folders_reload_without_hybridft(runs, data):
    folders = json.dumps({method: str(folder) for method, folder in runs.items()})
    done = subprocess.run(
        [sys.executable, "-c", RELOAD, str(data["eval"]), folders],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    reloaded = json.loads(done.stdout.strip().splitlines()[-1])
    for method, folder in runs.items():
        recorded = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
        assert len(recorded) == EVAL_ROWS
        # Recorded from batches padded together, reloaded one row at a time: equal up to float32 rounding.
        logits = reloaded[method]["logits"]
        np.testing.assert_allclose(logits, [r["logits"] for r in recorded], atol=1e-5, rtol=1e-5, err_msg=method)
        predicted = [reloaded[method]["id2label"][str(int(np.argmax(z)))] for z in logits]
        assert predicted == [r["prediction"] for r in recorded], method


def test_regression_is_inferred_from_float_labels(data, tmp_path):
    folder = tmp_path / "out"
    assert main(_train_args(data, folder, "--label-column", "score")) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics) >= {"pearson", "spearman", "eval_loss"} and "accuracy" not in metrics
    config = json.loads((folder / "model" / "config.json").read_text())
    assert len(config["id2label"]) == 1 and config["problem_type"] == "regression"
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    with open(data["eval"]) as handle:
        assert [r["label"] for r in rows] == [float(r["score"]) for r in csv.DictReader(handle)]


def test_staged_output_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), staged_output(target) as folder:
        (folder / "metrics.json").write_text("{}")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with staged_output(target) as folder:
        (folder / "metrics.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "metrics.json").is_file()


def test_kd_methods_pin_one_teacher_weight(data, tmp_path):
    base = dict(
        model="tiny-bert", train=str(data["train"]), eval=str(data["eval"]), output=tmp_path / "o", text_column="text"
    )
    assert TrainConfig(**base, method="kd_pre").hybrid_arguments() == {"gamma": 0.0}
    kd_fine = TrainConfig(**base, method="kd_fine", hybrid={"alpha": 0.2})
    assert kd_fine.hybrid_arguments() == {"alpha": 0.2, "beta": 0.0}
    with pytest.raises(InputError, match=r"--gamma: --method kd_pre fixes gamma at 0\.0"):
        TrainConfig(**base, method="kd_pre", hybrid={"gamma": 0.5})


def test_adapter_without_adapters_is_refused_before_training(data, tmp_path, monkeypatch):
    """With `adapters` not importable (a None entry in sys.modules makes `import adapters` raise ImportError, as on
    an environment without it), --method adapter is refused at the argument check, naming the extra and the
    transformers version it needs."""
    monkeypatch.setitem(sys.modules, "adapters", None)
    base = dict(
        model="tiny-bert", train=str(data["train"]), eval=str(data["eval"]), output=tmp_path / "o", text_column="text"
    )
    with pytest.raises(InputError, match=r"--method: method 'adapter' needs .*hybridft\[adapters\].*transformers < 5"):
        TrainConfig(**base, method="adapter")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------------ mix
@pytest.fixture(scope="module")
def endpoints(tmp_path_factory) -> dict[str, Path]:
    """Two tiny-bert classifiers of one architecture from different seeds (only fine/ has a tokenizer), and a
    three-label one that does not fit them."""
    from hybridft.models import build_model, load_tokenizer
    from hybridft.user_runs import UserTask

    folder = tmp_path_factory.mktemp("endpoints")
    two, three = (UserTask(Labels("classification", tuple(range(k)), tuple("abc"[:k]))) for k in (2, 3))
    for name, task, seed in (("pre", two, 1), ("fine", two, 2), ("three", three, 3)):
        build_model("tiny-bert", task, seed).save_pretrained(folder / name)
    load_tokenizer("tiny-bert").save_pretrained(folder / "fine")
    return {name: folder / name for name in ("pre", "fine", "three")}


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return AutoModelForSequenceClassification.from_pretrained(folder).state_dict()


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.3])
def test_mix_matches_the_formula(endpoints, tmp_path, alpha):
    out = tmp_path / "mixed"
    assert main(_args("mix", pre=endpoints["pre"], fine=endpoints["fine"], alpha=alpha, output=out)) == 0
    pre, fine, mixed = _state(endpoints["pre"]), _state(endpoints["fine"]), _state(out)
    assert mixed.keys() == pre.keys()
    for key, value in mixed.items():
        if alpha in (0.0, 1.0) or not value.is_floating_point():
            assert torch.equal(value, (pre if alpha == 1.0 else fine)[key]), key
        else:
            expected = alpha * pre[key].double() + (1 - alpha) * fine[key].double()
            torch.testing.assert_close(value.double(), expected, atol=1e-7, rtol=1e-6)
    assert not torch.equal(pre["classifier.weight"], fine["classifier.weight"])
    record = json.loads((out / "mix.json").read_text())
    assert record["alpha"] == alpha and record["tokenizer"] == str(endpoints["fine"])
    assert record["weights_sha256"] == weights_hash(AutoModelForSequenceClassification.from_pretrained(out))
    assert (out / "tokenizer.json").is_file()


def _refused(argv: list[str], capsys) -> str:
    """Run ``argv``; assert exit code 2 and exactly one line on stderr; return that line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_mix_refuses_models_that_differ(endpoints, tmp_path, capsys):
    argv = _args("mix", pre=endpoints["three"], fine=endpoints["fine"], alpha=0.5, output=tmp_path / "o")
    err = _refused(argv, capsys)
    assert "argument --fine" in err and "'classifier.weight'" in err and "shape (3, 64) vs (2, 64)" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"pre": "/no/such/folder"}, ["argument --pre", "/no/such/folder"]),
        ({"alpha": 1.5}, ["argument --alpha", "[0, 1]", "1.5"]),
        ({"model_class": "BertModel"}, ["argument --model-class", "BertModel"]),
    ],
)
def test_mix_refuses_bad_arguments(endpoints, tmp_path, capsys, extra, expected):
    flags = {"pre": endpoints["pre"], "fine": endpoints["fine"], "alpha": 0.5, "output": tmp_path / "o", **extra}
    err = _refused(_args("mix", **flags), capsys)
    assert all(text in err for text in expected), err


# ------------------------------------------------------------------------------------------------------ bad input
def _bad_tables(folder: Path, data: dict[str, Path]) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    rows = _rows(6, rng)
    unseen = [*rows[:5], {**rows[5], "label": "neutral"}]
    no_label = [*rows[:3], {**rows[3], "label": ""}, *rows[4:]]
    (folder / "train.tsv").write_text("text\tlabel\na\tpos\n")
    (folder / "empty.csv").write_text("")
    return {
        "tsv": folder / "train.tsv",
        "empty": folder / "empty.csv",
        "header": _write_csv(folder / "header.csv", []),
        "unseen": _write_csv(folder / "unseen.csv", unseen),
        "no_label": _write_csv(folder / "no_label.csv", no_label),
        "not_empty": folder,
        **data,
    }


BAD_INPUTS = {
    "missing file": (["--train", "{tmp}/nope/train.csv"], ["argument --train", "nope/train.csv", "no such file"]),
    "unknown extension": (["--train", "{tsv}"], ["argument --train", "train.tsv", "'.tsv'", ".csv, .json"]),
    "empty file": (["--train", "{empty}"], ["argument --train", "empty.csv", "is empty"]),
    "header only": (["--train", "{header}"], ["argument --train", "header.csv", "no rows"]),
    "hub id offline": (["--train", "no-such-user/no-such-set"], ["argument --train", "no-such-user/no-such-set"]),
    "missing column": (
        ["--text-column", "sentence"],
        ["argument --text-column", "'sentence'", "its columns: text, pair, label, score"],
    ),
    "unseen eval label": (["--eval", "{unseen}"], ["argument --eval", "'neutral'", "training labels: neg, pos"]),
    "score as class": (
        ["--label-column", "score", "--task-type", "classification"],
        ["argument --label-column", "'score'", "classification expects integer, string or boolean"],
    ),
    "pair is text": (["--text-pair-column", "text"], ["argument --text-pair-column", "'text'", "--text-column"]),
    "empty label": (["--train", "{no_label}"], ["argument --label-column", "'label'", "row 4", "no_label.csv"]),
    "hybrid_output": (["--method", "hybrid_output"], ["argument --method", "'hybrid_output'", "--method hybrid"]),
    "alpha out of range": (["--method", "hybrid", "--alpha", "1.5"], ["argument --alpha", "[0, 1]", "1.5"]),
    "alpha without hybrid": (["--alpha", "0.3"], ["argument --alpha", "hybrid methods", "--method plain"]),
    "unlabeled without hybrid": (["--unlabeled", "{unlabeled}"], ["argument --unlabeled", "--method plain"]),
    "kd_pre with gamma": (["--method", "kd_pre", "--gamma", "0.5"], ["argument --gamma", "kd_pre", "0.5"]),
    "output not empty": (["--output", "{not_empty}"], ["argument --output", "not an empty folder"]),
    "max length": (["--max-length", "4"], ["argument --max-length", ">= 8", "4"]),
    "unknown method": (["--method", "full"], ["argument --method", "'full'"]),
    "not a number": (["--epochs", "two"], ["argument --epochs", "'two'"]),
}


@pytest.mark.parametrize(("extra", "expected"), list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(data, tmp_path, capsys, extra, expected):
    paths = {name: str(path) for name, path in _bad_tables(tmp_path, data).items()} | {"tmp": str(tmp_path)}
    (tmp_path / "keep").write_text("")  # makes tmp_path a non-empty --output for "output not empty"
    argv = _train_args(data, tmp_path / "out", *[x.format(**paths) for x in extra])
    err = _refused(argv, capsys)
    assert err.startswith("hybridft train: error: "), err
    assert all(text in err for text in expected), err
    assert not (tmp_path / "out").exists()


def test_help_lists_commands_and_field_help(capsys):
    done = subprocess.run(
        [sys.executable, "-m", "hybridft", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "train" in done.stdout and "mix" in done.stdout
    assert main(["train", "--help"]) == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, at hyphens too
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(HybridTrainingArguments) if f.name in HYBRID_FLAGS}
    for name in HYBRID_FLAGS:  # one sentence serves the dataclass's docs and --help
        assert f"--{name.replace('_', '-')}" in text and "".join(helps[name].split()) in text, name
    assert main(["mix", "--help"]) == 0
    assert "--model-class" in capsys.readouterr().out
