"""Tables from synthetic records: hand-computable mean ± std and best marks, failures shown, byte-identical output."""

from __future__ import annotations

import random
import statistics

import pytest

from bench import records as rec
from bench import table_core, tables
from bench.render import latex_escape
from tests.bench.synthetic import make_record


def _rows() -> list[dict]:
    return [
        make_record("cola", "plain", 0, 0.40), make_record("cola", "plain", 1, 0.44),
        make_record("cola", "lora", 0, 0.30, trainable=150_000),
        make_record("cola", "lora", 1, None, status="failed", trainable=150_000),
        make_record("rte", "plain", 0, 0.60), make_record("rte", "plain", 1, 0.62),
        make_record("rte", "lora", 0, 0.65, trainable=150_000),
        make_record("rte", "lora", 1, 0.55, status="diverged", trainable=150_000),
        make_record("squad_devsplit", "plain", 0, 55.0), make_record("squad_devsplit", "plain", 1, 57.5),
        make_record("squad_devsplit", "lora", 0, 30.25, trainable=160_000),
        make_record("squad_devsplit", "lora", 1, 33.75, trainable=160_000),
    ]  # fmt: skip


def _md_rows(text: str, title: str) -> list[list[str]]:
    block = text.split(f"### {title}", 1)[1].split("###", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if line.startswith("| ")]


def test_main_table_mean_std_no_average_and_no_bold():
    md = tables.render(_rows())["table.md"]
    header, plain, lora = _md_rows(md, "Headline metric (%), mean ± std over seeds")
    assert header == ["Model", "Method", "# Trainable", "CoLA (Mcc)", "RTE (Acc)", "SQuAD-devsplit (F1)",
                      "Compute ×plain"]  # fmt: skip
    sd = statistics.stdev
    assert plain == ["minilm", "plain", "22.7M", f"42.0 ± {sd([40, 44]):.1f}", f"61.0 ± {sd([60, 62]):.1f}",
                     f"56.2 ± {sd([55, 57.5]):.1f}", "–"]  # fmt: skip
    # lora: one seed failed on CoLA and one diverged on RTE → mean of the ok seed only, marked, and both count as
    # not learned (k/n over every recorded run); no compute fields in these records → "–"
    assert lora == ["minilm", "lora", "0.15M–0.16M", "30.0 (1/2 ok) ⚠1/2", "65.0 (1/2 ok) ⚠1/2", "32.0 ± 2.5",
                    "–"]  # fmt: skip
    assert "**" not in md.split("### Headline metric", 1)[1].split("\n### ", 1)[0]  # a best mean is not a finding


def test_per_seed_table_shows_failed_and_diverged_runs():
    md = tables.render(_rows())["table.md"]
    rows = _md_rows(md, "Per seed: headline metric (%), every run")[1:]
    assert ["minilm", "lora", "1", "failed", "55.00 (diverged)", "33.75"] in rows
    assert len(rows) == 4
    assert "failed: minilm lora seed 1 cola: RuntimeError: CUDA out of memory" in md
    assert "Runs: 12 (1 diverged, 1 failed, 10 ok)" in md
    assert "Offline deviation: squad_devsplit is not official SQuAD v1.1" in md


def test_cost_table_uses_finished_runs():
    md = tables.render(_rows())["table.md"]
    rows = _md_rows(md, "Cost per run (median over tasks and seeds; runs that finished)")
    assert rows[2] == ["minilm", "lora", "0.15M–0.16M", "22.7M", "5", "10.0", "1.5", "12.5", "900", "51.2"]


def test_regeneration_is_byte_identical_and_order_free(tmp_path):
    rows = _rows()
    for r in rows:
        rec.append_record(tmp_path / "runs.jsonl", r)
    tables.write_all(tmp_path, plots=False)
    first = {n: (tmp_path / n).read_bytes() for n in table_core.TABLE_FILES}
    tables.write_all(tmp_path, plots=False)
    assert {n: (tmp_path / n).read_bytes() for n in table_core.TABLE_FILES} == first
    shuffled = tmp_path / "shuffled"
    random.Random(0).shuffle(rows)
    for r in rows[:5]:
        rec.append_record(shuffled / rec.runs_filename((1, 2)), r)
    for r in rows[5:]:
        rec.append_record(shuffled / rec.runs_filename((2, 2)), r)
    tables.write_all(shuffled, plots=False)
    assert {n: (shuffled / n).read_bytes() for n in table_core.TABLE_FILES} == first


def test_check_mode_detects_a_stale_table(tmp_path, capsys):
    for r in _rows():
        rec.append_record(tmp_path / "runs.jsonl", r)
    assert tables.main([str(tmp_path), "--check"]) == 1  # nothing written yet
    assert tables.main([str(tmp_path), "--no-plots"]) == 0
    assert tables.main([str(tmp_path), "--check"]) == 0
    (tmp_path / "table.tex").write_text((tmp_path / "table.tex").read_text() + "%")
    assert tables.main([str(tmp_path), "--check"]) == 1
    assert "table.tex differs" in capsys.readouterr().err
    assert tables.main([str(tmp_path / "empty")]) == 2


def test_check_mode_takes_several_folders_and_names_each(tmp_path, capsys):
    good, stale = tmp_path / "good", tmp_path / "stale"
    for folder in (good, stale):
        for r in _rows():
            rec.append_record(folder / "runs.jsonl", r)
    assert tables.main([str(good), str(stale), "--no-plots"]) == 0
    (stale / "table.md").write_text((stale / "table.md").read_text() + "\n")
    assert tables.main([str(stale), str(good), "--check"]) == 1  # the stale one fails the call, the other is checked
    err = capsys.readouterr().err
    assert f"{stale}/table.md differs" in err and f"{good}: tables are up to date" in err
    assert tables.main([str(good), str(tmp_path / "none"), "--check"]) == 2  # an empty folder, named, before any work
    assert "none" in capsys.readouterr().err


def test_references_are_kept_out_of_the_main_table():
    ours = [make_record("rte", "plain", s, 0.7 + s / 100, model="roberta-base", trainable=124_647_170) for s in (0, 1)]
    md = tables.render(ours)["table.md"]
    rows = _md_rows(md, "Headline metric (%), mean ± std over seeds")
    assert [r[1] for r in rows[1:]] == ["plain"]
    refs = _md_rows(md, "Published reference rows (not run here)")
    assert refs[2][:5] == ["roberta-base", "LoRA (Hu et al. 2022)", "roberta-base", "0.8M", "86.6"]
    assert refs[1][:5] == ["roberta-base", "FT (Liu et al. 2019)", "roberta-base", "125M", "78.7"]
    assert "github.com/microsoft/LoRA" in md
    assert "Published reference rows" not in tables.render(_rows())["table.md"]  # minilm has no published rows


def test_references_file_rows_are_complete():
    refs = tables.load_references()
    assert refs and all(r["source"] and r["scores"] and r["label"] and r["model"] for r in refs)
    assert all(0 < v <= 100 for r in refs for v in r["scores"].values())


def test_sweep_table_and_plots(tmp_path):
    sweeps = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        curve = [{"alpha": a, "headline": 0.5 + 0.2 * a * (1 - a) + shift, "metrics": {}} for a in (0.0, 0.5, 1.0)]
        sweeps.append(make_record("rte", "alpha_sweep", seed, max(p["headline"] for p in curve), kind="alpha_sweep",
                                  curve=curve, alphas=[0.0, 0.5, 1.0]))  # fmt: skip
    records = _rows() + sweeps
    md = tables.render(records)["table.md"]
    rows = _md_rows(md, "α sweep (WiSE-FT weight mix, no distillation): headline (%) vs α, mean over seeds")
    assert rows == [["Model", "Task", "Seeds", "α=0", "α=0.5", "α=1"], ["minilm", "RTE", "2", "51.0", "56.0", "51.0"]]
    assert "alpha_sweep" not in _md_rows(md, "Headline metric (%), mean ± std over seeds")[0]
    for r in records:
        rec.append_record(tmp_path / "runs.jsonl", r)
    written = tables.write_all(tmp_path)
    for name in ("params_vs_score.png", "alpha_sweep.png"):
        assert tmp_path / name in written
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("text", "latex"), [("squad_devsplit", r"squad\_devsplit"), ("42.0 ± 2.8", r"42.0 $\pm$ 2.8"),
                                             ("a&b%", r"a\&b\%"), ("–", "--"), ("50.0 ⚠2/3", r"50.0 $^\triangle$2/3"),
                                             ("×plain ≤ 1", r"$\times$plain $\leq$ 1"),
                                             ("60.0 θ↓1/2", r"60.0 $\theta\!\downarrow$1/2"),
                                             ("θ_pre", r"$\theta$\_pre")])  # fmt: skip
def test_latex_escaping(text, latex):
    assert latex_escape(text) == latex


def test_human_counts():
    assert [table_core.human_count(n) for n in (124_647_170, 2_057_666, 150_000, 4_200, 12)] == [
        "125M", "2.1M", "0.15M", "4.2K", "12"]  # fmt: skip


def test_lora_matched_is_a_baseline_with_its_own_compute_match_table():
    from bench.tables import build_tables

    records = [make_record(task, method, seed, 0.6 + 0.01 * seed + (0.03 if method == "hybrid_lora" else 0.0),
                           train_flops=flops)
               for task in ("cola", "rte") for seed in (0, 1, 2)
               for method, flops in (("lora", 1e12), ("lora_matched", 2.2e12), ("hybrid_lora", 2e12))]  # fmt: skip
    tables = {t.title: t for t in build_tables(records, references=[])}
    match = tables["Compute match: train FLOPs of lora_matched ÷ hybrid_lora, median over seeds"]
    assert match.rows == [["minilm", "lora_matched ÷ hybrid_lora", "1.10", "1.10", "1.10 (1.10–1.10)"]]
    assert "lora_matched trains LoRA for as many epochs as match hybrid_lora's pipeline." in match.notes[0]
    assert not any("plain_matched ÷ hybrid" in title for title in tables)
    differences = next(t for title, t in tables.items() if title.startswith("Differences vs lora_matched"))
    row = next(r for r in differences.rows if r[1:3] == ["lora_matched", "hybrid_lora"])
    # +3 points on every seed of both tasks: a zero-width t-interval (p = 0), Holm-significant
    assert row[4] == "+3.0 [+3.0, +3.0]" and row[6] == "+3.0 [+3.0, +3.0]", row
    assert {(differences.rows.index(row), 4), (differences.rows.index(row), 6)} <= differences.bold


def _teachers(pre_dev, pre_eval, fine_dev=None, fine_eval=None, *, majority=0.55, majority_eval=0.5, source="dev",
              lp=False) -> dict:  # fmt: skip
    """A record's teacher_scores (raw headline scale) and weak_teacher, as the runner writes them."""

    def scores(dev, value):
        return {"dev": dev, "eval": value, "majority": majority, "majority_eval": majority_eval, "dev_source": source}

    return {"teacher_scores": {"pre": scores(pre_dev, pre_eval), "fine": None if lp else scores(fine_dev, fine_eval)},
            "weak_teacher": pre_dev is not None and pre_dev <= majority}  # fmt: skip


def _teacher_rows() -> list[dict]:
    return [
        make_record("rte", "plain", 0, 0.60), make_record("rte", "plain", 1, 0.62), make_record("rte", "plain", 2, 0.64),
        # hybrid: θ_pre weak on seed 0 (dev 0.50 ≤ 0.55), not on seed 1; seed 2 predates the fields → counted 1/2
        make_record("rte", "hybrid", 0, 0.66, **_teachers(0.50, 0.52, 0.70, 0.68)),
        make_record("rte", "hybrid", 1, 0.70, **_teachers(0.60, 0.58, 0.74, 0.72)),
        make_record("rte", "hybrid", 2, 0.68),
        # kd_pre: never weak → no mark; one dev score missing
        make_record("rte", "kd_pre", 0, 0.61, **_teachers(0.60, 0.58, None, 0.72)),
        make_record("rte", "kd_pre", 1, 0.63, **_teachers(0.62, 0.60, 0.76, 0.74)),
        # lp: no θ_fine; its θ_pre is weak on both seeds, and dev is cross-validated; one run failed after teachers
        make_record("rte", "lp", 0, 0.57, **_teachers(0.55, 0.51, lp=True, source="cv")),
        make_record("rte", "lp", 1, None, status="failed", **_teachers(0.54, 0.50, lp=True, source="cv")),
        # SQuAD's headline is a percentage already: the teacher scores are too
        make_record("squad_devsplit", "hybrid", 0, 60.0, majority_baseline=2.0,
                    **_teachers(40.0, 42.0, 58.0, 57.0, majority=2.5, majority_eval=2.0)),
    ]  # fmt: skip


def test_main_table_marks_weak_teachers_over_the_runs_that_record_them():
    out = tables.render(_teacher_rows())
    rows = {r[1]: r for r in _md_rows(out["table.md"], tables.MAIN_TITLE)[1:]}
    assert rows["hybrid"][3] == f"68.0 ± 2.0 (med 68.0) {tables.WEAK_MARK}1/2"  # seed 2 has no weak_teacher
    assert rows["hybrid"][4] == "60.0"  # SQuAD: θ_pre 40.0 on dev > 2.5
    assert rows["kd_pre"][3] == "62.0 ± 1.4"  # 0/2 weak: no mark
    assert rows["lp"][3] == f"57.0 (1/2 ok) ⚠1/2 {tables.WEAK_MARK}2/2"  # the failed run counts in both
    assert rows["plain"][3] == "62.0 ± 2.0 (med 62.0)"
    assert f"- {tables.WEAK_MARK}k/n: in k of the n runs that record it (the record's weak_teacher)" in out["table.md"]
    assert r"$\theta\!\downarrow$1/2" in out["table.tex"] and r"$\theta\!\downarrow$2/2" in out["table.tex"]
    for name in (
        "Per seed: headline metric (%), every run",
        "Differences vs plain (percentage points, 95 % intervals)",
    ):
        assert tables.WEAK_MARK not in "".join(map("".join, _md_rows(out["table.md"], name)))


def test_weak_teacher_mark_stays_out_of_the_out_of_distribution_table():
    from bench.shift_tables import ood_table

    shift = {"x": {"role": "shift", "headline": 0.6, "headline_metric": "accuracy", "majority_baseline": 0.5}}
    records = [make_record("sst2", "hybrid", s, 0.7, weak_teacher=True, shift_metrics=shift) for s in (0, 1)]
    assert tables.WEAK_MARK in tables.main_table(records).rows[0][3]
    assert not any(tables.WEAK_MARK in cell for row in ood_table(records).rows for cell in row)


def test_records_without_teacher_fields_get_no_mark_note_or_teachers_table():
    records = _rows()
    md = tables.render(records)["table.md"]
    assert tables.WEAK_MARK not in md and "θ" not in md and "### Teachers" not in md
    assert tables.teacher_table(records) is None
    # weak_teacher alone marks the main table; the teachers table needs teacher_scores
    marked = [make_record("rte", "hybrid", s, 0.6, weak_teacher=s == 0) for s in (0, 1)]
    assert tables.main_table(marked).rows[0][3] == f"60.0 ± 0.0 {tables.WEAK_MARK}1/2"
    assert tables.teacher_table(marked) is None


def test_teachers_table_means_std_majority_and_counts():
    out = tables.render(_teacher_rows())
    md = out["table.md"]
    assert md.index(f"### {tables.MAIN_TITLE}") < md.index("### Differences vs plain") < md.index("### Teachers")
    assert md.index("### Teachers") < md.index("### Per seed")
    header, *rows = _md_rows(md, tables.TEACHERS_TITLE)
    assert header == ["Model", "Task", "Method", "n", "θ_pre eval", "θ_pre dev", "θ_fine eval", "θ_fine dev",
                      "Majority eval", "Majority dev", "Weak θ_pre", "Probe λ"]  # fmt: skip
    sd = statistics.stdev
    assert rows == [
        # the run without teacher_scores (hybrid seed 2) is not in n; plain builds no teachers
        ["minilm", "RTE", "hybrid", "2", f"55.0 ± {sd([52, 58]):.1f}", "55.0", f"70.0 ± {sd([68, 72]):.1f}", "72.0",
         "50.0", "55.0", "1/2", "–"],
        ["minilm", "RTE", "lp", "2", f"50.5 ± {sd([51, 50]):.1f}", "54.5 (cv)", "–", "–", "50.0", "55.0", "2/2", "–"],
        ["minilm", "RTE", "kd_pre", "2", f"59.0 ± {sd([58, 60]):.1f}", "61.0", f"73.0 ± {sd([72, 74]):.1f}",
         "76.0", "50.0", "55.0", "0/2", "–"],  # one θ_fine dev score missing: the mean of the other
        ["minilm", "SQuAD-devsplit", "hybrid", "1", "42.0", "40.0", "57.0", "58.0", "2.0", "2.5", "0/1", "–"],
    ]  # fmt: skip
    assert "(cv) after a dev score: cross-validated on the training features" in md
    assert r"$\theta$\_pre eval" in out["table.tex"] and "54.5 (cv)" in out["table.tex"]


def test_teachers_table_of_lp_alone_and_of_dev_less_runs():
    records = [make_record("cola", "lp", s, 0.2, **_teachers(None, 0.1 * s, lp=True)) for s in (0, 1, 2)]
    table = tables.teacher_table(records)
    assert table.rows == [["minilm", "CoLA", "lp", "3", "10.0 ± 10.0", "–", "–", "–", "50.0", "55.0", "0/3", "–"]]
    assert not any(note.startswith("(cv)") for note in table.notes)


def test_teachers_table_probe_l2():
    records = []
    for s, l2 in enumerate([0.01, 0.1, 0.01]):
        record = make_record("cola", "hybrid", s, 0.6, **_teachers(0.5, 0.1 * s))
        record["probe"] = {"l2": l2}
        records.append(record)
    assert tables.teacher_table(records).rows[0][-1] == "0.01, 0.1"
