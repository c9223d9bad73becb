"""Benchmark profiles: data files in bench/profiles/*.toml merged into frozen dataclasses, and the run matrix.

A profile names the model(s), tasks, methods and seeds, the shared run settings (`[run]`: subset sizes, epochs,
batch size, max_length, learning rate) and an ordered list of `[[override]]` tables. An override applies to every
run whose model/task/method match its `model`/`task`/`method` keys (a string or a list; a missing key matches
all); its other keys are RunConfig fields (`epochs`, `learning_rate`, ...) or, for any other name, fields of the
method's config (`method_args`). Later overrides win. `[alpha_sweep]` adds one pseudo-run per (model, task, seed)
that records the WiSE-FT α curve of `base_method` (reusing the cached teachers). `[method_seeds]` gives a row its
own seeds (e.g. ``plain = [0, 1, 2]`` where the profile's ``seeds`` are 0–4): the rows a table's main comparison
needs get more seeds than the rest, at the cost of those runs only.

The matrix is ordered model → task → seed → method (α sweep last), so the runs that share a teacher stage are
adjacent, and a shard gets whole (model, task, seed) groups: teachers are built once per shard and two shards
never write the same stage artifact.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bench.experiment import RunConfig
from bench.methods import get_method
from bench.shift import default_specs
from bench.tasks import get_task, offline_task_names
from hybridft.lm_models import LM_SPECS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    try:
        import tomli as tomllib
    except ImportError:  # the error names the fix instead of failing later on a missing attribute
        tomllib = None

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
ALPHA_SWEEP = "alpha_sweep"
# RunConfig fields a profile may set; every other override key goes to the method config (method_args).
RUN_FIELDS = ("train_size", "eval_size", "max_length", "epochs", "batch_size", "eval_batch_size", "learning_rate",
              "batching", "dev_size", "eval_on", "shifts", "shift_size")  # fmt: skip
REPORT_TARGETS = ("tensorboard",)
MATCH_KEYS = ("model", "task", "method")


def profile_names() -> list[str]:
    """Every profile shipped in bench/profiles/."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


@dataclass(frozen=True)
class Override:
    """Settings for the runs whose model, task and method match (None matches all)."""

    model: tuple[str, ...] | None
    task: tuple[str, ...] | None
    method: tuple[str, ...] | None
    values: Mapping[str, Any]

    def matches(self, model: str, task: str, method: str) -> bool:
        pairs = ((self.model, model), (self.task, task), (self.method, method))
        return all(allowed is None or value in allowed for allowed, value in pairs)


@dataclass(frozen=True)
class Variant:
    """A named row: ``method`` with some config fields fixed (``values``), e.g. ``hybrid_a0.25`` = hybrid at α 0.25.

    The variant's values are applied after the profile's overrides for ``method``, so it shares everything else
    (budget rule, teacher stages) with the method it varies. ``reset`` names fields that the overrides set and the
    variant takes back to the method's default (TOML has no null), e.g. ``hybrid`` without the unlabelled inputs
    that the profile gives ``hybrid``."""

    name: str
    method: str
    values: Mapping[str, Any]
    reset: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    """One benchmark profile, as read from its file. `run` holds RunConfig defaults (see RUN_FIELDS)."""

    name: str
    description: str
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    run: Mapping[str, Any]
    overrides: tuple[Override, ...] = ()
    offline_tasks: bool = False  # with a data dir: every task whose train split is there, instead of `tasks`
    alpha_sweep: bool = False
    alphas: tuple[float, ...] = ()
    sweep_method: str = "wise_ft"
    requires: tuple[str, ...] = ()  # e.g. ("gpu", "hub"): stated in --list and in the table header
    notes: str = ""
    report_to: tuple[str, ...] = ()  # ("tensorboard",): event files per run under OUTPUT/tensorboard/
    variants: tuple[Variant, ...] = ()  # named method variants usable in `methods` (e.g. hybrid at another α)
    cluster: Mapping[str, Any] = field(default_factory=dict)  # [cluster]: --executor flag defaults (bench.executors)
    method_seeds: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # row → its own seeds ([method_seeds])

    def __post_init__(self) -> None:
        for name in ("models", "tasks", "methods", "seeds"):
            if not getattr(self, name):
                raise ValueError(f"profile {self.name!r}: {name} is empty; expected at least one entry")
        unknown = set(self.run) - set(RUN_FIELDS)
        if unknown:
            raise ValueError(f"profile {self.name!r}: unknown [run] keys {sorted(unknown)}; expected {RUN_FIELDS}")
        if self.alpha_sweep and not self.alphas:
            raise ValueError(f"profile {self.name!r}: alpha_sweep is on but alphas is empty")
        if any(not 0.0 <= a <= 1.0 for a in self.alphas):
            raise ValueError(f"profile {self.name!r}: alphas must lie in [0, 1], got {self.alphas}")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names) or any(not n or n == ALPHA_SWEEP for n in names):
            raise ValueError(f"profile {self.name!r}: variant names must be unique and non-empty, got {names}")
        rows = {*self.methods, *([ALPHA_SWEEP] if self.alpha_sweep else [])}
        for row, seeds in self.method_seeds.items():
            if row not in rows:
                raise ValueError(
                    f"profile {self.name!r}: [method_seeds] names {row!r}, not a row of the profile; "
                    f"expected one of {sorted(rows)}"
                )
            if not seeds or len(set(seeds)) != len(seeds):
                raise ValueError(
                    f"profile {self.name!r}: [method_seeds] {row} must list distinct seeds, got {list(seeds)}"
                )
        unknown_targets = set(self.report_to) - set(REPORT_TARGETS)
        if unknown_targets:
            raise ValueError(f"profile {self.name!r}: report_to {sorted(unknown_targets)}; expected {REPORT_TARGETS}")

    def seeds_of(self, row: str) -> tuple[int, ...]:
        """The seeds of one row: its [method_seeds] entry, else the profile's seeds."""
        return self.method_seeds.get(row, self.seeds)

    def all_seeds(self) -> tuple[int, ...]:
        """Every seed some row runs, ascending."""
        return tuple(sorted({*self.seeds, *(s for seeds in self.method_seeds.values() for s in seeds)}))

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def base_method(self, name: str) -> str:
        """The registered method behind a row name (a variant's method, else the name itself)."""
        variant = self.variant(name)
        return variant.method if variant else name

    def settings(self, model: str, task: str, method: str) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
        """RunConfig fields and method_args for one run: [run] defaults, then each matching override in order
        (matched on the base method of a variant), then the variant's own values."""
        run_fields, method_args = dict(self.run), {}
        variant = self.variant(method)
        base = variant.method if variant else method
        for override in self.overrides:
            if override.matches(model, task, base):
                for key, value in override.values.items():
                    (run_fields if key in RUN_FIELDS else method_args)[key] = value
        for key in variant.reset if variant else ():
            if key in RUN_FIELDS:
                run_fields.pop(key, None)
            else:
                method_args.pop(key, None)
        for key, value in (variant.values if variant else {}).items():
            (run_fields if key in RUN_FIELDS else method_args)[key] = value
        return run_fields, tuple(sorted(method_args.items()))


def _as_tuple(value: Any, key: str, source: str) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(value)
    raise ValueError(f"{source}: {key} must be a string or a list, got {value!r}")


def parse_profile(name: str, data: Mapping[str, Any], source: str = "<profile>") -> Profile:
    """Build a Profile from a parsed TOML mapping; unknown top-level keys are errors, not silently ignored."""
    known = {"description", "models", "tasks", "methods", "seeds", "run", "override", "offline_tasks",
             "alpha_sweep", "requires", "notes", "report_to", "variant", "cluster", "method_seeds"}  # fmt: skip
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
    overrides = []
    for i, table in enumerate(data.get("override", [])):
        match = {k: _as_tuple(table.get(k), k, f"{source} override #{i}") for k in MATCH_KEYS}
        values = {k: v for k, v in table.items() if k not in MATCH_KEYS}
        overrides.append(Override(**match, values=MappingProxyType(values)))
    variants = []
    for i, table in enumerate(data.get("variant", [])):
        if not isinstance(table.get("name"), str) or not isinstance(table.get("method"), str):
            raise ValueError(f"{source} variant #{i}: needs string keys 'name' and 'method', got {table!r}")
        reset = _as_tuple(table.get("reset"), "reset", f"{source} variant #{i}") or ()
        values = {k: v for k, v in table.items() if k not in ("name", "method", "reset")}
        variants.append(Variant(table["name"], table["method"], MappingProxyType(values), reset))
    sweep = data.get("alpha_sweep", {})
    method_seeds = data.get("method_seeds", {})
    if not isinstance(method_seeds, dict) or not all(
        isinstance(v, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in v)
        for v in method_seeds.values()
    ):
        raise ValueError(f"{source}: [method_seeds] must map row names to lists of integer seeds, got {method_seeds!r}")
    return Profile(
        name=name,
        description=data.get("description", ""),
        models=tuple(data.get("models", ())),
        tasks=tuple(data.get("tasks", ())),
        methods=tuple(data.get("methods", ())),
        seeds=tuple(int(s) for s in data.get("seeds", ())),
        run=MappingProxyType(dict(data.get("run", {}))),
        overrides=tuple(overrides),
        offline_tasks=bool(data.get("offline_tasks", False)),
        alpha_sweep=bool(sweep.get("enabled", False)),
        alphas=tuple(float(a) for a in sweep.get("alphas", ())),
        sweep_method=sweep.get("method", "wise_ft"),
        requires=tuple(data.get("requires", ())),
        notes=data.get("notes", ""),
        report_to=tuple(data.get("report_to", ())),
        variants=tuple(variants),
        cluster=MappingProxyType(dict(data.get("cluster", {}))),
        method_seeds=MappingProxyType({k: tuple(v) for k, v in method_seeds.items()}),
    )


def load_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name (smoke, quick, paper) or any profile file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise ValueError(f"unknown profile {name_or_path!r}; expected one of {profile_names()} or a .toml path")
    if tomllib is None:  # pragma: no cover
        raise RuntimeError("reading profiles on Python 3.10 needs the 'tomli' package: pip install tomli")
    with path.open("rb") as f:
        return parse_profile(path.stem, tomllib.load(f), source=str(path))


@dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix: a RunConfig, or (kind "alpha_sweep") the α curve of that config."""

    config: Any  # bench.experiment.RunConfig
    kind: str = "run"
    alphas: tuple[float, ...] = field(default=())
    variant: str | None = None  # the profile's row name when the run is a named variant of config.method

    @property
    def method(self) -> str:
        """The method shown in tables: the variant's name, the RunConfig's method, or "alpha_sweep"."""
        if self.kind == ALPHA_SWEEP:
            return ALPHA_SWEEP
        return self.variant or self.config.method

    @property
    def key(self) -> str:
        """Identity of the run in runs.jsonl: the config hash (plus the α grid for a sweep)."""
        if self.kind == "run":
            return self.config.config_hash()
        blob = json.dumps({"kind": self.kind, "config": self.config.config_hash(), "alphas": self.alphas})
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def group(self) -> tuple[str, str, int]:
        """Runs that share teacher stages: same model, task and seed."""
        return (self.config.model, self.config.task, self.config.seed)

    def label(self) -> str:
        c = self.config
        return f"{c.task}/{self.method}/seed{c.seed}" + (f"/{c.model}" if c.model else "")


def _default_config_factory() -> Callable[..., Any]:
    return RunConfig


def _is_causal_lm(model: str) -> bool:
    """Whether a model spec is a causal LM: the packaged LM specs ("smollm2", "tiny-llama"), or a local folder whose
    config.json names a ``*ForCausalLM`` architecture. A hub id is not looked up (offline): False."""
    if model in LM_SPECS:
        return True
    config = Path(model) / "config.json"
    if not config.is_file():
        return False
    try:
        architectures = json.loads(config.read_text()).get("architectures") or ()
    except (OSError, ValueError):
        return False
    return any(str(name).endswith("ForCausalLM") for name in architectures)


def resolve_tasks(profile: Profile, data_dir: str | Path | None, model: str | None = None) -> tuple[str, ...]:
    """The profile's tasks; with `offline_tasks` and a data dir, the tasks whose train split is there, less the
    causal_lm ones unless ``model`` (default: any of the profile's models) is a causal LM (`_is_causal_lm`)."""
    if not (profile.offline_tasks and data_dir):
        return profile.tasks

    models = profile.models if model is None else (model,)
    lm = any(_is_causal_lm(m) for m in models)
    return tuple(name for name in offline_task_names(data_dir) if lm or get_task(name).kind != "causal_lm")


def build_matrix(
    profile: Profile,
    *,
    tasks: Iterable[str] | None = None,
    methods: Iterable[str] | None = None,
    seeds: Iterable[int] | None = None,
    data_dir: str | Path | None = None,
    config_factory: Callable[..., Any] | None = None,
    extra_shifts: Mapping[str, Iterable[str]] | None = None,
    shift_dir: str | Path | None = None,
) -> list[RunSpec]:
    """Every run of the profile, narrowed to the given tasks/methods/seeds, in matrix order.

    ``extra_shifts``: task → shift-set specs ("NAME=PATH", the CLI's --shift) added to that task's runs, after the
    sets the profile gives them (its ``shifts``, default every registered set of the task). They change the runs'
    config hash, so a run finished without them is run again."""
    make = config_factory or _default_config_factory()
    task_lists = {model: list(tasks) if tasks else list(resolve_tasks(profile, data_dir, model))
                  for model in profile.models}  # fmt: skip
    all_methods = [*profile.methods, *([ALPHA_SWEEP] if profile.alpha_sweep else [])]
    method_list = [m for m in all_methods if m in set(methods)] if methods else all_methods
    if methods:
        missing = set(methods) - set(all_methods)
        if missing:
            raise ValueError(f"--methods {sorted(missing)} not in profile {profile.name!r}; expected {all_methods}")
    seed_list = list(seeds) if seeds else list(profile.all_seeds())
    specs = []
    for model in profile.models:
        for task in task_lists[model]:
            for seed in seed_list:
                for method in method_list:
                    if seed not in profile.seeds_of(method):
                        continue  # the row has its own seeds ([method_seeds])
                    row = profile.sweep_method if method == ALPHA_SWEEP else method
                    run_fields, method_args = profile.settings(model, task, row)
                    if not applies(profile.base_method(row), task, method_args, run_fields.get("learning_rate")):
                        continue  # a cell the method cannot fill (e.g. a multi-task method outside its tasks)
                    added = tuple((extra_shifts or {}).get(task, ()))
                    if added and run_fields.get("eval_on", "eval") == "eval":
                        given = run_fields.get("shifts")
                        run_fields["shifts"] = (*(default_specs(task) if given is None else given), *added)
                    cfg = make(task=task, method=profile.base_method(row), seed=seed, model=model,
                               method_args=method_args, data_dir=str(data_dir) if data_dir else None,
                               **({"shift_dir": str(shift_dir)} if shift_dir else {}), **run_fields)  # fmt: skip
                    if method == ALPHA_SWEEP:
                        specs.append(RunSpec(cfg, kind=ALPHA_SWEEP, alphas=profile.alphas))
                    else:
                        specs.append(RunSpec(cfg, variant=row if profile.variant(row) else None))
    return specs


def applies(method: str, task: str, method_args, learning_rate) -> bool:
    """Whether registered ``method`` with these arguments applies to registered ``task``
    (`hybridft.methods.Method.applies_to`); True when either name is unknown or the arguments are bad, so the run
    fails with its own error instead of vanishing from the matrix."""
    try:
        found, kind = get_method(method), get_task(task)
        config = found.make_config(method_args, learning_rate)
    except (ValueError, TypeError):
        return True
    return found.applies_to(kind, config)


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' (1-based) → (K, N); ValueError naming the expected form."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like K/N with integers, e.g. 2/4; got {text!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"--shard K/N needs 1 <= K <= N; got {text!r}")
    return k, n


def shard(specs: list[RunSpec], k: int, n: int) -> list[RunSpec]:
    """Shard k of n (1-based): whole (model, task, seed) groups, dealt round-robin in matrix order."""
    if not 1 <= k <= n:
        raise ValueError(f"shard k={k} of n={n}: expected 1 <= k <= n")
    order: dict[tuple, int] = {}
    for spec in specs:
        order.setdefault(spec.group, len(order))
    return [s for s in specs if order[s.group] % n == k - 1]


__all__ = [
    "ALPHA_SWEEP",
    "RUN_FIELDS",
    "Override",
    "Profile",
    "RunSpec",
    "Variant",
    "build_matrix",
    "load_profile",
    "parse_profile",
    "parse_shard",
    "profile_names",
    "resolve_tasks",
    "shard",
]
