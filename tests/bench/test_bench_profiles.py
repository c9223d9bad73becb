"""Profiles: shipped files load, overrides merge in order, the matrix is complete, shards partition it exactly."""

from __future__ import annotations

from collections import Counter

import pytest

from bench import profiles as prof
from bench.experiment import RunConfig

ALL_METHODS = ("plain", "plain_matched", "adapter", "lora", "hybrid", "hybrid_output", "lp", "lp_ft", "wise_ft",
               "kd_pre", "kd_fine", "lora_matched", "hybrid_lora", "hybrid_auto", "hybrid_layers", "hybrid_adamerging",
               "plain_multitask", "hybrid_multitask")  # fmt: skip
HEADLINE = ("plain", "plain_matched", "adapter", "lora", "hybrid", "wise_ft")
OFFLINE = ("cola", "sst2", "mrpc", "stsb", "rte", "wnli", "conll2003", "squad_devsplit")
OFFLINE_LM = ("sst2_lm", "squad_lm")  # offline too, but kind causal_lm: expanded only for a causal-LM model


def _profile(**extra):
    data = {"models": ["tiny-bert"], "tasks": ["cola", "rte"], "methods": ["plain", "lora"], "seeds": [0, 1],
            "run": {"train_size": 32, "epochs": 1.0}} | extra  # fmt: skip
    return prof.parse_profile("test", data)


def test_shipped_profiles_load_and_say_what_they_cover():
    assert prof.profile_names() == ["ablations", "curves", "llm-paper", "llm-quick", "llm-smoke", "mrpc-budget",
                                    "paper", "quick", "semi", "smoke", "teachers", "variants"]  # fmt: skip
    smoke, quick, paper, ablations = (prof.load_profile(n) for n in ("smoke", "quick", "paper", "ablations"))
    assert smoke.offline_tasks and set(smoke.tasks) == set(OFFLINE) and smoke.methods == ALL_METHODS
    assert smoke.seeds == (0, 1) and smoke.alpha_sweep and smoke.requires == ()  # plain_matched with 2 seeds
    assert quick.methods == HEADLINE and len(quick.seeds) >= 3 and {"sst2", "conll2003"} <= set(quick.tasks)
    assert not quick.alpha_sweep and quick.requires == () and quick.report_to == ("tensorboard",)
    assert smoke.models == ("tiny-bert",) and quick.models == ablations.models == ("minilm",)
    assert len(ablations.seeds) >= 3 and ablations.alpha_sweep and set(ablations.tasks) <= set(quick.tasks)
    assert {"lp", "lp_ft", "kd_pre", "kd_fine", "hybrid_output", "hybrid_a0.25", "hybrid", "hybrid_a0.75"} <= set(
        ablations.methods
    )
    assert paper.models == ("bert-base-uncased", "roberta-base") and paper.seeds == (0, 1, 2, 3, 4)
    assert set(paper.requires) == {"gpu", "hub"} and "train_size" not in paper.run  # full data
    fields, _ = paper.settings("roberta-base", "rte", "lora_paper")
    assert (fields["learning_rate"], fields["epochs"], fields["max_length"]) == (5e-4, 80.0, 512)
    fields, _ = paper.settings("roberta-base", "rte", "lora")  # the budget-rule row is not the recipe
    assert (fields["epochs"], fields["max_length"]) == (3.0, 128) and "learning_rate" not in fields
    fields, _ = paper.settings("bert-base-uncased", "mrpc", "plain")
    assert (fields["learning_rate"], fields["epochs"]) == (2e-5, 5.0)
    assert "learning_rate" not in paper.settings("bert-base-uncased", "cola", "adapter")[0]


def test_causal_lm_profiles_cover_every_lm_method():
    from bench.tasks import get_task

    smoke, quick = prof.load_profile("llm-smoke"), prof.load_profile("llm-quick")
    assert smoke.models == ("tiny-llama",) and quick.models == ("smollm2",)
    for profile in (smoke, quick):
        assert all(get_task(t).kind == "causal_lm" for t in profile.tasks)
    # every method that applies to a causal LM (lp, lp_ft need a probe; hybrid_output mixes vocabulary outputs)
    assert set(smoke.methods) == {"plain", "plain_matched", "adapter", "lora", "hybrid", "wise_ft", "kd_pre", "kd_fine"}
    assert smoke.alpha_sweep and set(smoke.tasks) == {"sst2_lm", "squad_lm"}
    assert {"zero_shot", "plain", "plain_matched", "lora", "hybrid"} == set(quick.methods) and len(quick.seeds) >= 3


def test_llm_paper_is_peft_s_gsm8k_comparison():
    p = prof.load_profile("llm-paper")
    assert set(p.requires) == {"gpu", "hub"} and p.tasks == ("gsm8k_lm",) and p.seeds == (0, 1, 2, 3, 4)
    assert p.models == ("meta-llama/Llama-3.2-3B",)
    assert p.methods == ("zero_shot", "plain", "plain_matched", "lora", "hybrid")
    fields, args = p.settings(p.models[0], "gsm8k_lm", "lora")
    assert (fields["train_size"], fields["max_length"], fields["batch_size"], fields["learning_rate"]) == (
        20000, 768, 4, 1e-4)  # fmt: skip
    assert dict(args) == {"weight_decay": 0.1, "warmup_ratio": 0.1, "r": 32, "lora_alpha": 64, "lora_dropout": 0.0,
                          "target_modules": ["q_proj", "v_proj"]}  # fmt: skip
    assert p.settings(p.models[0], "gsm8k_lm", "plain")[0]["learning_rate"] == 1e-5


STAGED = ("lp_ft", "wise_ft", "hybrid", "hybrid_output", "kd_pre", "kd_fine")


@pytest.mark.parametrize("name", ["smoke", "quick", "paper", "ablations", "llm-paper", "semi", "variants", "teachers"])
def test_one_budget_rule_and_one_teacher_recipe_per_task(name):
    """Every method of a (model, task) gets the same epochs, max length and batch size (lora_paper excepted, by
    name); every teacher-stage method the same LP-FT teacher; plain_matched the hybrid stages' epochs."""
    from bench.methods import get_method

    p = prof.load_profile(name)
    for spec in prof.build_matrix(p, tasks=p.tasks):
        if spec.method == "lora_paper":
            continue
        cfg = spec.config
        ref = next(s.config for s in prof.build_matrix(p, tasks=[cfg.task], methods=[p.methods[0]])
                   if s.config.model == cfg.model)  # fmt: skip
        assert (cfg.epochs, cfg.max_length, cfg.batch_size, cfg.train_size, cfg.dev_size) == (
            ref.epochs, ref.max_length, ref.batch_size, ref.train_size, ref.dev_size), spec.label()  # fmt: skip
    for model in p.models:
        for task in p.tasks:
            teachers = set()
            for method in STAGED:
                if method in p.methods or (p.alpha_sweep and method == p.sweep_method):
                    run_fields, args = p.settings(model, task, method)
                    config = get_method(method).make_config(args, run_fields.get("learning_rate"))
                    teachers.add((config.ft_learning_rate, config.ft_epochs, config.lp_l2_grid, config.lp_folds,
                                  config.ft_warmup_ratio, config.ft_weight_decay))  # fmt: skip
            assert len(teachers) <= 1, (name, model, task, teachers)
            if "plain_matched" in p.methods:
                run_fields, args = p.settings(model, task, "plain_matched")
                matched = get_method("plain_matched").make_config(args, run_fields.get("learning_rate"))
                run_fields, args = p.settings(model, task, "hybrid")
                hybrid = get_method("hybrid").make_config(args, run_fields.get("learning_rate"))
                assert (matched.ft_epochs, matched.student_epochs) == (hybrid.ft_epochs, None)
                if name not in ("quick", "semi", "variants"):  # own rate there (test_lr_sweep_choice.py)
                    assert matched.learning_rate == hybrid.ft_learning_rate  # plain's recipe = the teacher's
                # sized after hybrid's own unlabelled inputs, if any
                assert (matched.unlabeled_split, matched.unlabeled_size) == (
                    hybrid.unlabeled_split, hybrid.unlabeled_size)  # fmt: skip
            if "lora_matched" in p.methods:  # sized after hybrid_lora's stages, LoRA's recipe = its teacher's
                run_fields, args = p.settings(model, task, "lora_matched")
                matched = get_method("lora_matched").make_config(args, run_fields.get("learning_rate"))
                run_fields, args = p.settings(model, task, "hybrid_lora")
                hybrid_lora = get_method("hybrid_lora").make_config(args, run_fields.get("learning_rate"))
                assert (matched.ft_epochs, matched.student_epochs) == (hybrid_lora.ft_epochs, None)
                if name != "variants":  # its lora_matched has its own rate (test_lr_sweep_choice.py)
                    assert matched.learning_rate == hybrid_lora.ft_learning_rate
                assert (matched.r, matched.target_modules) == (hybrid_lora.r, hybrid_lora.target_modules)


def test_semi_gives_hybrid_and_plain_matched_the_unlabelled_inputs_and_not_hybrid_labelled():
    p = prof.load_profile("semi")
    for row in ("hybrid", "plain_matched"):
        assert dict(p.settings("minilm", "sst2", row)[1])["unlabeled_split"] == "train"
        assert dict(p.settings("minilm", "sst2", row)[1])["unlabeled_size"] <= 8000
    run_fields, args = p.settings("minilm", "sst2", "hybrid_labelled")
    assert "unlabeled_split" not in dict(args) and "unlabeled_size" not in dict(args)
    assert dict(args)["ft_learning_rate"] == dict(p.settings("minilm", "sst2", "hybrid")[1])["ft_learning_rate"]
    assert run_fields["learning_rate"] == 3e-4


def test_a_variant_resets_fields_that_overrides_set():
    p = _profile(methods=["lora", "lora_default"], variant=[{"name": "lora_default", "method": "lora",
                 "reset": ["r", "epochs"]}], override=[{"method": "lora", "r": 16, "epochs": 2.0}])  # fmt: skip
    assert p.settings("tiny-bert", "cola", "lora") == ({"train_size": 32, "epochs": 2.0}, (("r", 16),))
    assert p.settings("tiny-bert", "cola", "lora_default") == ({"train_size": 32}, ())
    with pytest.raises(ValueError, match="reset must be a string or a list"):
        _profile(variant=[{"name": "a", "method": "lora", "reset": 3}])


def test_variants_apply_after_overrides_and_name_their_row():
    p = _profile(methods=["plain", "lora", "lora_r4"], variant=[{"name": "lora_r4", "method": "lora", "r": 4}],
                 override=[{"method": "lora", "r": 16, "learning_rate": 1e-3}])  # fmt: skip
    assert p.settings("tiny-bert", "cola", "lora_r4") == ({"train_size": 32, "epochs": 1.0, "learning_rate": 1e-3},
                                                          (("r", 4),))  # fmt: skip
    specs = prof.build_matrix(p, config_factory=RunConfig)
    variant = [s for s in specs if s.method == "lora_r4"]
    assert len(variant) == 4 and all(s.config.method == "lora" for s in variant)
    assert len({s.key for s in specs}) == len(specs)
    with pytest.raises(ValueError, match="variant names must be unique"):
        _profile(variant=[{"name": "a", "method": "lora"}, {"name": "a", "method": "plain"}])


def test_overrides_apply_in_order_and_split_run_fields_from_method_args():
    p = _profile(override=[{"method": "lora", "learning_rate": 1e-3, "r": 4},
                           {"method": ["lora", "plain"], "task": "rte", "epochs": 3.0, "r": 16},
                           {"model": "other", "epochs": 9.0}])  # fmt: skip
    assert p.settings("tiny-bert", "cola", "lora") == ({"train_size": 32, "epochs": 1.0, "learning_rate": 1e-3},
                                                       (("r", 4),))  # fmt: skip
    assert p.settings("tiny-bert", "rte", "lora") == ({"train_size": 32, "epochs": 3.0, "learning_rate": 1e-3},
                                                      (("r", 16),))  # fmt: skip
    assert p.settings("tiny-bert", "rte", "plain") == ({"train_size": 32, "epochs": 3.0}, (("r", 16),))
    assert p.settings("tiny-bert", "cola", "plain") == ({"train_size": 32, "epochs": 1.0}, ())


@pytest.mark.parametrize(
    ("extra", "message"),
    [({"colour": "red"}, "unknown keys"), ({"run": {"epochz": 1}}, r"unknown \[run\] keys"),
     ({"seeds": []}, "seeds is empty"), ({"alpha_sweep": {"enabled": True}}, "alphas is empty"),
     ({"alpha_sweep": {"enabled": True, "alphas": [0.5, 1.5]}}, r"alphas must lie in \[0, 1\]"),
     ({"override": [{"task": 3, "epochs": 1.0}]}, "task must be a string or a list"),
     ({"method_seeds": {"adapter": [0]}}, r"\[method_seeds\] names 'adapter', not a row of the profile"),
     ({"method_seeds": {"plain": []}}, r"\[method_seeds\] plain must list distinct seeds, got \[\]"),
     ({"method_seeds": {"plain": [1, 1]}}, r"must list distinct seeds, got \[1, 1\]"),
     ({"method_seeds": {"plain": ["0"]}}, r"\[method_seeds\] must map row names to lists of integer seeds"),
     ({"method_seeds": [0, 1]}, r"\[method_seeds\] must map row names to lists of integer seeds")],
)  # fmt: skip
def test_bad_profiles_are_named(extra, message):
    with pytest.raises(ValueError, match=message):
        _profile(**extra)


def test_unknown_profile_is_named():
    with pytest.raises(
        ValueError,
        match=r"unknown profile 'fast'; expected one of \['ablations', 'curves', 'llm-paper', 'llm-quick', "
        r"'llm-smoke', 'mrpc-budget', 'paper', 'quick', 'semi', 'smoke', 'teachers', 'variants'\]",
    ):
        prof.load_profile("fast")


def test_matrix_is_complete_ordered_and_keyed():
    p = _profile(alpha_sweep={"enabled": True, "alphas": [0.0, 1.0], "method": "wise_ft"},
                 methods=["plain", "lora", "wise_ft"])  # fmt: skip
    specs = prof.build_matrix(p, config_factory=RunConfig)
    assert len(specs) == 2 * 2 * 4  # tasks × seeds × (methods + α sweep)
    assert [s.method for s in specs[:4]] == ["plain", "lora", "wise_ft", "alpha_sweep"]
    assert len({s.key for s in specs}) == len(specs)
    sweep, wise = specs[3], specs[2]
    assert sweep.config == wise.config and sweep.key != wise.key and sweep.alphas == (0.0, 1.0)
    assert all(isinstance(s.config, RunConfig) and s.config.train_size == 32 for s in specs)
    narrowed = prof.build_matrix(p, tasks=["rte"], methods=["lora"], seeds=[1], config_factory=RunConfig)
    assert [(s.config.task, s.method, s.config.seed) for s in narrowed] == [("rte", "lora", 1)]
    with pytest.raises(ValueError, match=r"--methods \['bogus'\] not in profile"):
        prof.build_matrix(p, methods=["bogus"], config_factory=RunConfig)


def test_method_seeds_give_a_row_its_own_seeds_and_leave_the_others_keys_alone():
    base = _profile(seeds=[0, 1, 2])
    p = _profile(seeds=[0, 1, 2], method_seeds={"plain": [0, 1, 2, 3, 4]})
    assert (
        p.seeds_of("plain") == (0, 1, 2, 3, 4) and p.seeds_of("lora") == (0, 1, 2) and p.all_seeds() == tuple(range(5))
    )
    specs = prof.build_matrix(p, config_factory=RunConfig)
    cells = [(s.config.task, s.method, s.config.seed) for s in specs]
    assert Counter((m, s) for _, m, s in cells) == {**{("plain", s): 2 for s in range(5)},
                                                    **{("lora", s): 2 for s in range(3)}}  # fmt: skip
    # in matrix order (task → seed → method), and a run shared with the plain profile keeps its key
    assert cells[:8] == [("cola", m, s) for s in range(3) for m in ("plain", "lora")] + [
        ("cola", "plain", 3),
        ("cola", "plain", 4),
    ]
    assert {s.key for s in prof.build_matrix(base, config_factory=RunConfig)} <= {s.key for s in specs}
    narrowed = prof.build_matrix(p, seeds=[2, 4], config_factory=RunConfig)  # --seeds narrows each row's own seeds
    assert sorted((m, s) for _, m, s in [(x.config.task, x.method, x.config.seed) for x in narrowed]) == sorted(
        [("plain", 2), ("lora", 2), ("plain", 4)] * 2
    )


def test_data_dir_selects_the_offline_tasks_and_does_not_change_keys(data_dir):
    from bench.tasks import offline_task_names

    smoke = prof.load_profile("smoke")
    with_dir = prof.build_matrix(smoke, data_dir=data_dir, config_factory=RunConfig)
    without = prof.build_matrix(smoke, config_factory=RunConfig)
    assert {s.config.task for s in with_dir} == set(OFFLINE)  # the causal_lm tasks are not for a BERT
    assert set(offline_task_names(data_dir)) == {*OFFLINE, *OFFLINE_LM}
    assert [s.key for s in with_dir] == [s.key for s in without]
    # left out: the two multi-task methods outside SST-2 and MRPC, AdaMerging on STS-B and SQuAD (no class softmax)
    left_out = 2 * (len(OFFLINE) - 2) + 2
    assert len(with_dir) == (len(OFFLINE) * (len(ALL_METHODS) + 1) - left_out) * len(smoke.seeds)


def test_offline_tasks_include_the_causal_lm_ones_only_for_a_causal_lm(data_dir):
    lm = _profile(models=["tiny-llama"], offline_tasks=True)
    assert {s.config.task for s in prof.build_matrix(lm, data_dir=data_dir, config_factory=RunConfig)} == {
        *OFFLINE,
        *OFFLINE_LM,
    }
    both = _profile(models=["tiny-bert", "tiny-llama"], offline_tasks=True)
    specs = prof.build_matrix(both, data_dir=data_dir, config_factory=RunConfig)
    assert {s.config.task for s in specs if s.config.model == "tiny-bert"} == set(OFFLINE)
    assert {s.config.task for s in specs if s.config.model == "tiny-llama"} >= set(OFFLINE_LM)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 40])
def test_shards_partition_the_matrix_exactly_once(n):
    specs = prof.build_matrix(prof.load_profile("paper"), config_factory=RunConfig)
    shards = [prof.shard(specs, k, n) for k in range(1, n + 1)]
    counts = Counter(s.key for part in shards for s in part)
    assert set(counts) == {s.key for s in specs} and set(counts.values()) == {1}
    for part in shards:  # a teacher group never straddles two shards
        groups = {s.group for s in part}
        assert all(s.group not in groups for other in shards if other is not part for s in other)
    assert prof.shard(specs, n, n) == prof.shard(list(specs), n, n)  # deterministic


@pytest.mark.parametrize("text", ["3", "0/2", "3/2", "a/b", "1/2/3"])
def test_bad_shard_text_is_named(text):
    with pytest.raises(ValueError, match="--shard"):
        prof.parse_shard(text)
    assert prof.parse_shard("2/8") == (2, 8)


@pytest.mark.parametrize("name", ["smoke", "quick", "paper", "ablations", "curves", "llm-paper"])
def test_every_profile_run_has_a_valid_method_config(name):
    from bench.methods import get_method

    specs = prof.build_matrix(prof.load_profile(name), config_factory=RunConfig)
    for spec in specs:
        config = get_method(spec.config.method).make_config(spec.config.method_args, spec.config.learning_rate)
        if spec.config.learning_rate is not None:
            assert getattr(config, get_method(spec.config.method).lr_field) == spec.config.learning_rate
    if name != "paper":
        return
    lora = [s for s in specs if s.method == "lora_paper" and s.config.model == "roberta-base"]
    assert all(dict(s.config.method_args) == {"r": 8, "lora_alpha": 16, "weight_decay": 0.1, "warmup_ratio": 0.06}
               for s in lora)  # fmt: skip


def test_the_matrix_leaves_out_cells_a_method_cannot_fill():
    """Multi-task methods run on their own tasks only, AdaMerging on classification and token tasks; a method with
    bad arguments stays in the matrix (its run fails with its own error instead of vanishing)."""
    p = _profile(tasks=["sst2", "mrpc", "stsb", "conll2003"],
                 methods=["plain", "plain_multitask", "hybrid_adamerging", "broken"],
                 variant=[{"name": "hybrid_adamerging", "method": "hybrid", "alpha": "adamerging"},
                          {"name": "broken", "method": "lora", "rank": 3}])  # fmt: skip
    cells = {(s.config.task, s.method) for s in prof.build_matrix(p, tasks=p.tasks)}
    assert {t for t, m in cells if m == "plain"} == {"sst2", "mrpc", "stsb", "conll2003"}
    assert {t for t, m in cells if m == "plain_multitask"} == {"sst2", "mrpc"}
    assert {t for t, m in cells if m == "hybrid_adamerging"} == {"sst2", "mrpc", "conll2003"}
    assert {t for t, m in cells if m == "broken"} == {"sst2", "mrpc", "stsb", "conll2003"}
