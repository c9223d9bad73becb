"""Wall time of one distillation epoch (teacher logits cached) against one plain fine-tuning epoch.

    python -m bench.trainer.bench_epoch_ratio [--train-size 512] [--repeats 3] [--out results/trainer/epoch_ratio.csv]

Both epochs train the same model (MiniLM by default) on the same SST-2 examples with the same batch size, learning
rate and seed, through `hybridft.fitting.fit`: the plain one with the model's own loss under `Trainer`, the
distillation one with the hybrid stage's `Trainer` subclass (teacher rows fetched by index, `hybrid_kd_loss` with
both teachers). The teacher logits are computed once before timing, as the hybrid method does. Epochs alternate
plain/distill after one warm-up pair; the ratio is median(distill) / median(plain), with the spread of the per-pair
ratios. Goal: ≤ 1.15. Rows are long-format (one metric per row) with provenance; a re-run replaces its own rows.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bench.experiment import RunConfig, prepare_data
from hybridft.distill import cached_teacher_logits, rows_for, with_index
from hybridft.fitting import TrainSpec, fit
from hybridft.methods.distillation import fit_distillation
from hybridft.models import build_model
from hybridft.provenance import collect, device_label

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "results" / "trainer" / "epoch_ratio.csv"
KEY_FIELDS = ("device_label", "model", "task", "train_size", "batch_size", "max_length")


@dataclass(frozen=True)
class EpochRatioConfig:
    model: str = "minilm"
    task: str = "sst2"
    train_size: int = 512
    batch_size: int = 32
    max_length: int = 128
    repeats: int = 3
    seed: int = 0
    data_dir: str | None = None


def setup(config: EpochRatioConfig):
    """Prepared data, a start model and cached teacher rows; returns ({"plain": fn, "distill": fn}, n_features).

    Each fn trains a fresh copy of the start model for one epoch and returns its `FitResult`.
    """
    run = RunConfig(
        task=config.task,
        method="plain",
        seed=config.seed,
        model=config.model,
        train_size=config.train_size,
        eval_size=1,
        max_length=config.max_length,
        batch_size=config.batch_size,
        data_dir=config.data_dir,
    )
    data = prepare_data(run)
    task, collator = data.task, data.task.collator(data.tokenizer)
    start = build_model(config.model, task, config.seed)
    features = with_index(data.train_features)
    rows = rows_for(task.kind)
    cache = Path(tempfile.mkdtemp(prefix="epoch-ratio-"))
    teachers = [
        cached_teacher_logits(
            build_model(config.model, task, seed),
            features,
            collator,
            rows,
            cache_dir=cache,
            key_data={},
            batch_size=64,
            progress=True,
        )[0]
        for seed in (config.seed + 1, config.seed + 2)
    ]
    spec = TrainSpec(learning_rate=2e-5, epochs=1.0, batch_size=config.batch_size, seed=config.seed)
    work = cache / "trainer"

    def plain():
        return fit(copy.deepcopy(start), data.train_features, collator, spec, output_dir=work, progress=False)

    def distill():
        return fit_distillation(
            copy.deepcopy(start),
            features,
            collator,
            spec,
            kind=task.kind,
            pre_logits=teachers[0],
            fine_logits=teachers[1],
            loss_kwargs={"alpha": 0.0, "beta": 1.0, "gamma": 1.0, "temperature": 2.0, "ce_weight": 1.0},
            output_dir=work,
            progress=False,
        )

    return {"plain": plain, "distill": distill}, len(features)


def measure(config: EpochRatioConfig) -> dict[str, list[float]]:
    """Epoch wall times per variant: one warm-up pair, then ``repeats`` alternating pairs."""
    fns, _ = setup(config)
    fns["plain"](), fns["distill"]()  # warm-up: first-call allocations, lazy imports
    times: dict[str, list[float]] = {"plain": [], "distill": []}
    for _ in tqdm(range(config.repeats), desc="epoch pairs"):
        for name in ("plain", "distill"):
            times[name].append(fns[name]().train_time_s)
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, float]:
    pairs = [d / p for p, d in zip(times["plain"], times["distill"], strict=True)]
    return {
        "plain_epoch_s_median": statistics.median(times["plain"]),
        "distill_epoch_s_median": statistics.median(times["distill"]),
        "ratio": statistics.median(times["distill"]) / statistics.median(times["plain"]),
        "pair_ratio_min": min(pairs),
        "pair_ratio_max": max(pairs),
    }


def rows_for_csv(config: EpochRatioConfig, times, summary) -> list[dict]:
    prov = collect()
    base = {
        "device_label": device_label(),
        **{k: v for k, v in asdict(config).items() if k != "data_dir"},
        "torch_threads": prov["hardware"].get("torch_threads"),
    }
    tail = {
        "hardware": json.dumps(prov["hardware"], sort_keys=True),
        "versions": json.dumps(prov["versions"], sort_keys=True),
        "python": prov["python"],
        "git_revision": prov["git_revision"],
        "git_dirty": prov["git_dirty"],
        "timestamp": prov["timestamp"],
    }
    out = []
    for variant, values in times.items():
        for i, value in enumerate(values):
            out.append(
                {**base, "variant": variant, "repeat": i, "metric": "epoch_wall_s", "value": value, "unit": "s", **tail}
            )
    for metric, value in summary.items():
        unit = "s" if metric.endswith("_s_median") else "x"
        out.append(
            {**base, "variant": "distill/plain", "repeat": "", "metric": metric, "value": value, "unit": unit, **tail}
        )
    return out


def write_rows(path: Path, rows: list[dict]) -> None:
    """Replace the rows of the same setup (KEY_FIELDS) in ``path``, keep the others; atomic rename."""
    kept = []
    if path.is_file():
        with path.open(newline="") as f:
            new_keys = {tuple(str(r[k]) for k in KEY_FIELDS) for r in rows}
            kept = [r for r in csv.DictReader(f) if tuple(r[k] for k in KEY_FIELDS) not in new_keys]
    fields = list(rows[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.part")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept + rows)
    os.replace(tmp, path)


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = EpochRatioConfig()
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--task", default=defaults.task)
    parser.add_argument("--train-size", type=int, default=defaults.train_size)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument("--repeats", type=int, default=defaults.repeats)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    config = EpochRatioConfig(
        model=args.model,
        task=args.task,
        train_size=args.train_size,
        batch_size=args.batch_size,
        max_length=args.max_length,
        repeats=args.repeats,
        data_dir=args.data_dir,
    )
    times = measure(config)
    summary = summarise(times)
    write_rows(args.out, rows_for_csv(config, times, summary))
    print(json.dumps({"times": times, **summary}, indent=1))
    return summary


if __name__ == "__main__":
    main()
