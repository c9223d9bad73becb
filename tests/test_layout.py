"""The library / benchmark layering (docs/design.md, "Layout"): the library never imports the benchmark, has no
import cycle (imports inside functions counted), and every library module imports alone in a fresh process."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# `kernels/` is installed as `hybridft.kernels` (pyproject.toml [tool.setuptools.package-dir])
FOLDERS = {"hybridft": REPO / "hybridft", "hybridft.kernels": REPO / "kernels", "bench": REPO / "bench"}


def modules() -> dict[str, Path]:
    """Every module of the library and the benchmark by dotted name."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            if package == "hybridft" and path.is_relative_to(REPO / "hybridft" / "kernels"):
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules ``name`` imports anywhere in its file (inside functions too; not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
                break
    return targets


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def library(name: str) -> bool:
    return name == "hybridft" or name.startswith("hybridft.")


def test_the_graph_sees_imports_inside_functions(tmp_path):
    """The cycle check below must count function-level imports: a planted one is found."""
    known = {"hybridft.a": tmp_path / "a.py", "hybridft.b": tmp_path / "b.py"}
    known["hybridft.a"].write_text("def f():\n    from hybridft.b import g\n    return g\n")
    known["hybridft.b"].write_text("import os\n\nif False:\n    import hybridft.a\n")
    assert imports("hybridft.a", known["hybridft.a"], known) == {"hybridft.b"}
    assert imports("hybridft.b", known["hybridft.b"], known) == {"hybridft.a"}


def test_library_never_imports_the_benchmark():
    offenders = {name: sorted(t for t in targets if not library(t))
                 for name, targets in graph().items() if library(name)}  # fmt: skip
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_no_import_cycle_in_the_library():
    """Depth-first search over the library's imports (function-level ones included) finds no back edge."""
    edges = {name: {t for t in targets if library(t)} for name, targets in graph().items() if library(name)}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


# One interpreter loads the third-party stack once, then forks one child per module: each child starts with no module
# of this repository loaded and imports just one. Which of our modules happened to be imported first is exactly what
# a fresh process rules out; torch and transformers are not ours, and loading them once saves ~2 s per module.
_FORKED_IMPORTS = """
import importlib, json, os, sys, traceback
import numpy, torch, datasets, peft  # noqa: F401  the third-party stack, loaded once
from transformers import AutoModel, AutoTokenizer, Trainer, TrainingArguments  # noqa: F401  (its lazy modules too)
names = json.loads(sys.argv[1])
assert not [m for m in sys.modules if m.split(".")[0] in ("hybridft", "bench")], "parent is not clean"
failed, running = {}, {}


def reap():
    pid, status = os.wait()
    name, read = running.pop(pid)
    message = b"".join(iter(lambda: os.read(read, 65536), b""))
    os.close(read)
    if status != 0:
        failed[name] = message.decode()


for name in names:
    while len(running) >= 4:
        reap()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(name)
            code, message = 0, b""
        except BaseException:
            code, message = 1, traceback.format_exc()[-2000:].encode()
        os.write(write, message)
        os._exit(code)
    os.close(write)
    running[pid] = (name, read)
while running:
    reap()
print(json.dumps(failed))
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_library_module_imports_alone_in_a_fresh_process():
    """Every library module imports in a process where no other module of this repository was loaded before it
    (forked from an interpreter that holds only the third-party stack): no import works only because another of
    ours happened to be imported first."""
    names = sorted(name for name in modules() if library(name))
    if importlib.util.find_spec("triton") is None:  # the kernel needs it (an environment such as `nox -s compat`)
        names = [name for name in names if not name.startswith("hybridft.kernels")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _FORKED_IMPORTS, json.dumps(names)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}
    assert len(names) >= 30  # every module was tried


def test_forked_imports_report_a_module_that_does_not_import():
    """The check above can fail: a module that raises on import is reported with its traceback."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    names = ["hybridft.loss_checks", "hybridft.no_such_module"]
    done = subprocess.run([sys.executable, "-c", _FORKED_IMPORTS, json.dumps(names)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(failed) == ["hybridft.no_such_module"] and "ModuleNotFoundError" in failed["hybridft.no_such_module"]


def test_the_public_trainer_loads_no_benchmark_module():
    """`from hybridft import HybridTrainer, HybridTrainingArguments` in a fresh process loads no `bench` module (the
    task registry, metrics, shift sets, scoring, profiles and the experiment all live there) and no method."""
    code = (
        "import sys\n"
        "from hybridft import HybridTrainer, HybridTrainingArguments\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m == 'bench' or m.startswith(('bench.', 'hybridft.')))))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = done.stdout.split()
    assert "hybridft.trainer" in loaded and "hybridft.trainer_config" in loaded  # the check itself saw the imports
    assert [m for m in loaded if m == "bench" or m.startswith("bench.")] == []
    assert [m for m in loaded if m.startswith("hybridft.methods")] == []
