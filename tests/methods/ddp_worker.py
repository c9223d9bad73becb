"""The hybrid distillation stage on a fixed SST-2 slice, run either in-process or under torchrun (gloo, CPU).

``python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py OUT DATA_DIR CACHE BATCH`` writes the training
loss and the final weights to OUT (rank 0). Dropout is switched off so that one process with batch 2b and two with
b each see the same batches and the same computation up to summation order; plain SGD keeps the weights
comparable (Adam's normalisation turns summation-order noise in near-zero gradients into full-size steps).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

TRAIN_SIZE, MAX_LENGTH, EPOCHS = 32, 48, 2


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def run_stage(out: Path, data_dir: str, cache_dir: Path, batch_size: int) -> dict:
    from bench.data import subset
    from bench.tasks import get_task
    from hybridft.distill import cached_teacher_logits, rows_for, with_index
    from hybridft.fitting import TrainSpec
    from hybridft.interpolate import interpolate_models
    from hybridft.methods.distillation import fit_distillation
    from hybridft.models import build_model, load_tokenizer

    task, tokenizer = get_task("sst2"), load_tokenizer("tiny-bert")
    raw, _ = subset(task.load("train", data_dir), TRAIN_SIZE, 0, task="sst2", split="train")
    features = with_index(task.preprocess(raw, tokenizer, max_length=MAX_LENGTH, train=True))
    pre, fine = build_model("tiny-bert", task, 1), build_model("tiny-bert", task, 2)
    rows, collator = rows_for(task.kind), task.collator(tokenizer)
    teachers = [
        cached_teacher_logits(
            m, features, collator, rows, cache_dir=cache_dir, key_data={}, batch_size=16, progress=False
        )[0]
        for m in (pre, fine)
    ]
    student = _no_dropout(interpolate_models(pre, fine, 0.5))
    # random batches: bucketing groups by length within windows of batch_size, so 2 × b and b batches would differ
    spec = TrainSpec(learning_rate=0.05, epochs=EPOCHS, batch_size=batch_size, seed=7, batching="random")
    result = fit_distillation(
        student,
        features,
        collator,
        spec,
        kind=task.kind,
        pre_logits=teachers[0],
        fine_logits=teachers[1],
        loss_kwargs={"alpha": 0.0, "beta": 0.5, "gamma": 1.0, "temperature": 2.0, "ce_weight": 1.0},
        output_dir=out.parent / "trainer",
        progress=False,
        args_overrides={"logging_steps": 1, "optim": "sgd"},
    )
    summary = {"loss": result.training_loss}
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        torch.save(student.state_dict(), out.with_suffix(".pt"))
        out.write_text(json.dumps(summary))
    return summary


if __name__ == "__main__":
    out_path, data, cache, batch = sys.argv[1:5]
    run_stage(Path(out_path), data, Path(cache), int(batch))
