"""bench.verdict: every hybrid-family method against its matched baseline, from the records of every results folder,
and its README block (bench.readme verdict)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp

from bench import readme, verdict
from bench import records as rec
from tests.bench.synthetic import make_record

ROW = dict(zip(verdict.COLUMNS, range(len(verdict.COLUMNS)), strict=True))


def _write(folder, task, method, scores, *, flops=1e12, probe=True, shifts=None, start=0, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    for i, score in enumerate(scores):
        seed = start + i
        record = make_record(task, method, seed, score, train_flops=flops, majority_baseline=0.5,
                             stages=[{"stage": "lp"}, {"stage": "lp_ft"}] if method.startswith("hybrid") else [],
                             **extra)  # fmt: skip
        if probe and method.startswith("hybrid"):
            record["probe"] = {"converged": True}
        if shifts:
            record["shift_metrics"] = {name: {"role": "shift", "headline": values[i], "headline_metric": "accuracy",
                                              "majority_baseline": 0.5} for name, values in shifts.items()}  # fmt: skip
        rec.append_record(folder / "runs.jsonl", record)


def _t_text(diffs):
    d = np.asarray(diffs, dtype=np.float64)
    half = sp.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.1f} [{d.mean() - half:+.1f}, {d.mean() + half:+.1f}]"


def test_rows_compare_each_hybrid_method_with_its_matched_baseline(tmp_path):
    rng = np.random.default_rng(7)
    root = tmp_path / "results"
    base = rng.uniform(0.70, 0.80, 5)
    hybrid = base - rng.uniform(0.02, 0.04, 5)  # behind at every seed
    auto = base + rng.uniform(-0.03, 0.03, 5)
    _write(root / "quick", "sst2", "plain_matched", base, flops=1e12,
           shifts={"a": base - 0.1, "b": base - 0.2})  # fmt: skip
    _write(root / "quick", "sst2", "hybrid", hybrid, flops=1.02e12, shifts={"a": hybrid - 0.1, "b": hybrid - 0.1})
    _write(root / "quick", "sst2", "hybrid_auto", auto, flops=1.3e12)
    _write(root / "quick", "sst2", "plain", base)  # not a comparison of the verdict
    _write(root / "other", "rte", "hybrid", hybrid[:3], probe=False)  # no baseline here: no row
    rows = verdict.verdict_table(root).rows
    assert [r[ROW["Method vs baseline"]] for r in rows] == ["hybrid vs plain_matched", "hybrid_auto vs plain_matched"]
    first, second = rows
    assert first[ROW["Profile"]] == "quick" and first[ROW["Task"]] == "SST-2" and first[ROW["Seeds"]] == "5"
    assert first[ROW["ID mean"]] == f"{100 * hybrid.mean():.1f} vs {100 * base.mean():.1f}"
    assert first[ROW["ID diff [t 95 %]"]] == _t_text(100 * (hybrid - base)).replace("+-", "-")
    assert first[ROW["Reading"]] == "behind" and first[ROW["Flags"]] == "–"
    ood_mine, ood_base = 100 * (hybrid - 0.1), 100 * (base - 0.15)
    assert first[ROW["OOD mean"]] == f"{ood_mine.mean():.1f} vs {ood_base.mean():.1f}"
    assert first[ROW["OOD diff [t 95 %]"]] == _t_text(ood_mine - ood_base)
    assert first[ROW["Compute ratio"]] == "1.02×" and second[ROW["Compute ratio"]] == "1.30×"
    assert second[ROW["OOD mean"]] == "– vs –" or second[ROW["OOD mean"]] == "–"
    assert second[ROW["Reading"]] in ("not resolved", "ahead", "behind")


def test_flags_name_unlearned_runs_unchecked_teachers_and_unpaired_seeds(tmp_path):
    root = tmp_path / "results"
    _write(root / "semi", "sst2", "plain_matched", [0.80, 0.45, 0.78])  # seed 1 at or below the majority (0.5)
    _write(root / "semi", "sst2", "hybrid", [0.81, 0.79, 0.80, 0.82], probe=False)  # before the probe fix; 4 seeds
    (row,) = verdict.verdict_table(root).rows
    flags = row[ROW["Flags"]]
    assert "plain_matched failed to learn 1/3" in flags
    assert "θ_pre unchecked 4/4 (records predate the probe fix)" in flags
    assert row[ROW["Seeds"]] == "3"  # paired on the seeds both finished


def test_one_paired_seed_decides_nothing(tmp_path):
    root = tmp_path / "results"
    _write(root / "x", "sst2", "plain_matched", [0.80])
    _write(root / "x", "sst2", "hybrid", [0.90])
    (row,) = verdict.verdict_table(root).rows
    assert row[ROW["Reading"]] == "1 seed: undecided" and "no interval" in row[ROW["ID diff [t 95 %]"]]


def test_no_results_folder_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=f"no results folder with records under {tmp_path / 'nothing'}"):
        verdict.verdict_table(tmp_path / "nothing")
    (tmp_path / "empty" / "quick").mkdir(parents=True)
    with pytest.raises(ValueError, match="no results folder with records under"):
        verdict.verdict_table(tmp_path / "empty")


def test_the_readme_block_is_written_from_the_records_and_checked(tmp_path, monkeypatch):
    root = tmp_path / "results"
    _write(root / "quick", "sst2", "plain_matched", [0.80, 0.78, 0.79])
    _write(root / "quick", "sst2", "hybrid", [0.79, 0.80, 0.76])
    monkeypatch.chdir(tmp_path)
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- results:verdict:start -->\nOLD\n<!-- results:verdict:end -->\noutro\n")
    assert readme.main(["verdict", "--check"]) == 1
    assert readme.main(["verdict"]) == 0
    text = page.read_text()
    assert "OLD" not in text and text.startswith("intro\n") and text.endswith("\noutro\n")
    assert "| quick | minilm | SST-2 | hybrid vs plain_matched | 3 |" in text
    assert readme.main(["verdict", "--check"]) == 0
    _write(root / "quick", "sst2", "hybrid", [0.70], start=3)  # a new record makes the block stale
    _write(root / "quick", "sst2", "plain_matched", [0.75], start=3)
    assert readme.main(["verdict", "--check"]) == 1


def test_an_lm_matched_baseline_sized_by_the_old_head_count_is_flagged(tmp_path):
    from bench.methods.matched import LM_HEAD_RULE, LM_HEAD_RULE_KEY

    root = tmp_path / "results"
    _write(root / "old", "sst2_lm", "plain_matched", [0.80, 0.82, 0.81], task_kind="causal_lm")
    _write(root / "old", "sst2_lm", "hybrid", [0.79, 0.80, 0.78], task_kind="causal_lm")
    _write(root / "new", "sst2_lm", "plain_matched", [0.80, 0.82, 0.81], task_kind="causal_lm",
           method_extra={LM_HEAD_RULE_KEY: LM_HEAD_RULE})  # fmt: skip
    _write(root / "new", "sst2_lm", "hybrid", [0.79, 0.80, 0.78], task_kind="causal_lm")
    flags = {row[ROW["Profile"]]: row[ROW["Flags"]] for row in verdict.verdict_table(root).rows}
    assert flags["old"].startswith("plain_matched sized by the old LM-head count 3/3") and flags["new"] == "–"
