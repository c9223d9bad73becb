"""A run's splits of its task: the dev split held out of the train split, the training subset drawn from the rest,
the rows left over (unlabelled inputs), and the dev split preprocessed for scoring. `bench.experiment` prepares a
run's data from these, and `bench.joint_tasks` a multi-task run's."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bench.data import SubsetInfo, content_fingerprint, subset, subset_indices
from hybridft.task_kinds import qa_stride

if TYPE_CHECKING:
    from bench.experiment import RunConfig

PACKAGED_SPECS = ("tiny-bert", "minilm", "smollm2", "tiny-llama")  # named by spec in cache keys, not by their path


def split_dev(dataset, dev_size: int | None, seed: int, *, task: str, split: str):
    """(the rest, the dev split, its SubsetInfo | None): ``dev_size`` rows held out of ``dataset``, seeded by the
    run's seed, disjoint from every training subset drawn from the rest (which all methods of that seed share)."""
    if dev_size is None:
        return dataset, None, None
    if dev_size >= len(dataset):
        raise ValueError(f"dev_size={dev_size} leaves no training rows in {task}/{split} ({len(dataset)} rows)")
    order = np.random.default_rng([seed, 0xDE5]).permutation(len(dataset))
    dev_rows, rest_rows = np.sort(order[:dev_size]), np.sort(order[dev_size:])
    dev = dataset.select(dev_rows.tolist())
    info = SubsetInfo(task=task, split=f"{split}[dev]", size=len(dev), seed=int(seed),
                      fingerprint=content_fingerprint(dev))  # fmt: skip
    return dataset.select(rest_rows.tolist()), dev, info


def training_rest(cfg: RunConfig, task):
    """The rows of the train split that the run neither trains on nor holds out as its dev split (the same draws as
    `prepare_data`): the "other training inputs" that unlabelled distillation may use, their labels dropped."""
    pool, _, _ = split_dev(
        task.load(task.train_split, cfg.data_dir), cfg.dev_size, cfg.seed, task=task.name, split=task.train_split
    )
    chosen = set(subset_indices(len(pool), cfg.train_size, cfg.seed).tolist())
    rest = [i for i in range(len(pool)) if i not in chosen]
    if not rest:
        raise ValueError(f"task {task.name!r}: train_size={cfg.train_size} and dev_size={cfg.dev_size} leave no other "
                         f"training rows to use as unlabelled inputs")  # fmt: skip
    return pool.select(rest)


def training_features(cfg: RunConfig, task, tokenizer, pool=None):
    """(features, SubsetInfo, data_key) of the run's training subset of ``task``: ``cfg.train_size`` rows drawn with
    ``cfg.seed`` from ``pool`` (the train split less the dev split, `split_dev`; loaded when None), preprocessed
    for training. ``data_key`` identifies them in stage and teacher-logit cache keys."""
    if pool is None:
        pool, _, _ = split_dev(
            task.load(task.train_split, cfg.data_dir), cfg.dev_size, cfg.seed, task=task.name, split=task.train_split
        )
    train, train_info = subset(pool, cfg.train_size, cfg.seed, task=task.name, split=task.train_split)
    stride = qa_stride(cfg.max_length)
    features = task.preprocess(train, tokenizer, max_length=cfg.max_length, train=True, stride=stride)
    data_key = {
        "task": task.name,
        "subset": train_info.to_dict(),
        "max_length": cfg.max_length,
        "stride": stride,
        "tokenizer": cfg.model if cfg.model in PACKAGED_SPECS else tokenizer.name_or_path,
    }
    return features, train_info, data_key


def dev_examples(cfg: RunConfig, task, tokenizer):
    """(examples, features) of the run's dev split, as `prepare_data` holds it out, preprocessed for scoring (the
    hybrid method's α='auto', `hybridft.alpha_search`)."""
    _, dev, _ = split_dev(task.load(task.train_split, cfg.data_dir), cfg.dev_size, cfg.seed, task=task.name,
                          split=task.train_split)  # fmt: skip
    features = task.preprocess(dev, tokenizer, max_length=cfg.max_length, train=False, stride=qa_stride(cfg.max_length))
    return dev, features


def unlabelled_rows(cfg: RunConfig, task, split: str, size: int | None):
    """(rows, SubsetInfo): a seeded ``size`` subset of the task's split ``split`` as unlabelled inputs; the train split
    means its other rows, those the run neither trains on nor holds out as dev (`training_rest`)."""
    if split == task.train_split:
        source, label = training_rest(cfg, task), f"{task.train_split}[rest]"
    else:
        source, label = task.load(split, cfg.data_dir), split
    return subset(source, size, cfg.seed, task=task.name, split=label)
