"""Cost of one causal-LM training step: plain fine-tuning, the hybrid student, and naive three-logit distillation.

    python -m bench.trainer.bench_lm_step [--model smollm2] [--batch-size 8] [--seq-len 128]
        [--response-lens 2 64] [--steps 3] [--rounds 2] [--out results/trainer/lm_step.csv]

One step = forward, backward, AdamW step, zero_grad, on one batch of ``batch_size × seq_len`` tokens whose last
``response_len`` tokens of each row are the response (the labels; the prompt is −100), as in the causal-LM tasks:
2 is SST-2's verbalised label ("positive" + end of turn), 64 a long answer. Token ids are random: a step's cost does
not depend on them. The variants, each in a fresh process of its own (so each peak is its own):

- ``plain``: the model's own loss (`LlamaForCausalLM(labels=...)`): logits at every position, cross-entropy on the
  response tokens. This is the `plain` method's step.
- ``hybrid``: the hybrid student's step, through the code the method trains with (`hybridft.lm_distill.LmRows` and
  `LmHeadLoss`): the body's final hidden states at the response positions, then `hybrid_kd_linear_loss` against
  two teachers' cached hidden states and head weights (each a separate (V, H) copy, held for the whole step as
  the method holds them). No (rows × vocabulary) tensor is held whole.
- ``naive``: the same loss from materialised logits: the student's (B, L, V) logits from its own forward and each
  teacher's (rows, V) logits from its cached hidden states, through `hybrid_kd_loss` (torch back end).

The teachers' cached hidden states are the start model's own (computed once per process before timing): the
values do not change the cost. Time: the median of ``steps`` timed steps after one warm-up step, per process;
``rounds`` processes per variant, in the order plain, hybrid, naive, plain, ... so drifts hit every variant alike.
Memory: the process's peak resident set size (`resource.getrusage`, the model's weights, gradients and AdamW state
included) on CPU; ``torch.cuda.max_memory_allocated`` over the steps on CUDA. Targets (issue 11): hybrid step time
≤ 1.15 × plain, hybrid peak ≤ 1.10 × plain. Long-format rows with provenance; a re-run replaces its own rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bench.kernels.bench_hybrid_kd import provenance_fields, write_rows
from bench.tasks import get_task
from hybridft.distill import IGNORE_INDEX
from hybridft.lm_distill import LmHeadLoss, LmRows, output_head
from hybridft.loss import hybrid_kd_loss
from hybridft.models import build_model
from hybridft.provenance import device_label

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "results" / "trainer" / "lm_step.csv"
KEY_FIELDS = ("device_label", "model", "batch_size", "seq_len", "response_len", "torch_threads")
VARIANTS = ("plain", "hybrid", "naive")
LOSS = {"alpha": 0.0, "beta": 1.0, "gamma": 1.0, "temperature": 2.0, "ce_weight": 1.0}


@dataclass(frozen=True)
class StepCase:
    model: str = "smollm2"
    batch_size: int = 8
    seq_len: int = 128
    response_len: int = 2
    steps: int = 3
    seed: int = 0


def _batch(case: StepCase, vocab: int, device):
    g = torch.Generator().manual_seed(case.seed)
    ids = torch.randint(0, vocab, (case.batch_size, case.seq_len), generator=g)
    labels = ids.clone()
    labels[:, : case.seq_len - case.response_len] = IGNORE_INDEX
    mask = torch.ones_like(ids)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def run_variant(case: StepCase, variant: str) -> dict:
    """One process's measurement of ``variant``: step times (s) and peak memory (MiB)."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model = build_model(case.model, get_task("sst2_lm"), case.seed).to(device).train()
    batch = _batch(case, model.config.vocab_size, device)
    rows = LmRows()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        teacher = rows.output_rows(rows.teacher_forward(model, inputs), batch)[0].detach().clone()
    heads = [output_head(model).weight.detach().clone() for _ in range(2)] if variant != "plain" else []
    loss_fn = LmHeadLoss(output_head(model), *heads) if variant == "hybrid" else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        if variant == "plain":
            loss = model(**batch).loss
        elif variant == "hybrid":
            outputs = rows.student_forward(model, inputs)
            h, p, f, y = rows.loss_rows(outputs, inputs, {"labels": batch["labels"]}, teacher, teacher)
            loss = loss_fn(h, p, f, y, **LOSS)
        else:
            logits = model(**inputs).logits
            y = batch["labels"][:, 1:]
            keep = y != -100
            student = logits[:, :-1][keep]
            loss = hybrid_kd_loss(student, teacher @ heads[0].T, teacher @ heads[1].T, y[keep], backend="torch", **LOSS)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()  # warm-up: optimizer state, first-call allocations
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(case.steps):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if cuda:
        peak, source = torch.cuda.max_memory_allocated() / 2**20, "cuda_max_memory_allocated"
    else:
        peak, source = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"
    return {"times": times, "peak_mib": peak, "memory_source": source}


def measure(case: StepCase, rounds: int) -> dict[str, list[dict]]:
    """``rounds`` fresh processes per variant, interleaved (module docstring)."""
    out: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    jobs = [(r, v) for r in range(rounds) for v in VARIANTS]
    for _, variant in tqdm(jobs, desc=f"response {case.response_len}: processes"):
        cmd = [sys.executable, "-m", "bench.trainer.bench_lm_step", "--worker", json.dumps(asdict(case)), variant]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[2])
        if done.returncode != 0:
            raise RuntimeError(f"{variant} worker failed (rc {done.returncode}):\n{done.stderr[-4000:]}")
        out[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def summarise(results: dict[str, list[dict]]) -> dict[str, float]:
    median = {v: statistics.median(t for r in results[v] for t in r["times"]) for v in VARIANTS}
    peak = {v: max(r["peak_mib"] for r in results[v]) for v in VARIANTS}
    return {
        **{f"{v}_step_s_median": median[v] for v in VARIANTS},
        **{f"{v}_peak_mib": peak[v] for v in VARIANTS},
        "hybrid_over_plain_time": median["hybrid"] / median["plain"],
        "naive_over_plain_time": median["naive"] / median["plain"],
        "hybrid_over_plain_memory": peak["hybrid"] / peak["plain"],
        "naive_over_plain_memory": peak["naive"] / peak["plain"],
    }


def csv_rows(case: StepCase, results, summary) -> list[dict]:
    prov = provenance_fields()
    base = {**asdict(case), "torch_threads": torch.get_num_threads()}
    source = results["plain"][0]["memory_source"]
    out = []
    for variant, runs in results.items():
        for r, run in enumerate(runs):
            for i, t in enumerate(run["times"]):
                out.append({**base, "variant": variant, "round": r, "repeat": i, "metric": "step_s", "value": t,
                            "unit": "s", **prov})  # fmt: skip
            out.append({**base, "variant": variant, "round": r, "repeat": "", "metric": "peak_mib",
                        "value": run["peak_mib"], "unit": f"MiB ({source})", **prov})  # fmt: skip
    for metric, value in summary.items():
        unit = "x" if "_over_" in metric else ("s" if metric.endswith("_s_median") else "MiB")
        out.append({**base, "variant": "summary", "round": "", "repeat": "", "metric": metric, "value": value,
                    "unit": unit, **prov})  # fmt: skip
    return out


def write_summary(path: Path, cases: list[tuple[StepCase, dict]]) -> Path:
    """A Markdown table beside the CSV: one line per response length."""
    lines = [
        f"# Causal-LM training step: plain vs hybrid student vs naive distillation ({device_label()})",
        "",
        "Generated by `python -m bench.trainer.bench_lm_step`; see its docstring for the method. One step = "
        "forward, backward, AdamW step on one batch. Memory = peak of the whole process (weights, gradients, "
        "optimizer state included) on CPU.",
        "",
        "| model | batch × seq | response tokens | plain s | hybrid s | naive s | hybrid/plain time | "
        "plain MiB | hybrid MiB | naive MiB | hybrid/plain memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, s in cases:
        lines.append(
            f"| {case.model} | {case.batch_size} × {case.seq_len} | {case.response_len} "
            f"| {s['plain_step_s_median']:.2f} | {s['hybrid_step_s_median']:.2f} | {s['naive_step_s_median']:.2f} "
            f"| {s['hybrid_over_plain_time']:.3f} | {s['plain_peak_mib']:.0f} | {s['hybrid_peak_mib']:.0f} "
            f"| {s['naive_peak_mib']:.0f} | {s['hybrid_over_plain_memory']:.3f} |"
        )
    target = path.with_suffix(".md")
    target.write_text("\n".join(lines) + "\n")
    return target


def main(argv=None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--worker":
        case = StepCase(**json.loads(argv[1]))
        print(json.dumps(run_variant(case, argv[2])))
        return []

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = StepCase()
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len)
    parser.add_argument("--response-lens", type=int, nargs="+", default=[2, 64])
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for length in args.response_lens:
        if not 1 <= length < args.seq_len:
            raise SystemExit(f"--response-lens: each must be in [1, seq_len - 1 = {args.seq_len - 1}], got {length}")
    done, all_rows = [], []
    for length in args.response_lens:
        case = StepCase(model=args.model, batch_size=args.batch_size, seq_len=args.seq_len, response_len=length,
                        steps=args.steps)  # fmt: skip
        results = measure(case, args.rounds)
        summary = summarise(results)
        done.append((case, summary))
        all_rows += csv_rows(case, results, summary)
        print(json.dumps({"response_len": length, **summary}, indent=1), flush=True)
    fields = list(all_rows[0])
    write_rows(args.out, all_rows, KEY_FIELDS, fields)
    write_summary(args.out, done)
    return [s for _, s in done]


if __name__ == "__main__":
    main()
