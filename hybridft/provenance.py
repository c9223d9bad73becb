"""Where a result came from: hardware, package versions, git revision and dirty flag, timestamp.

Every row under results/ carries these fields, so a number can always be traced to the machine and code that made
it. Only the standard library is imported at module level; torch is asked for its device only when present.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

PACKAGES = (
    "hybridft",
    "torch",
    "triton",
    "transformers",
    "peft",
    "adapters",
    "datasets",
    "evaluate",
    "accelerate",
    "numpy",
)

_REPO = Path(__file__).resolve().parent.parent


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=_REPO, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out


def git_state() -> dict[str, object]:
    """Revision of the checkout this code runs from and whether it has uncommitted changes (None outside git)."""
    rev = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if rev else None
    return {"git_revision": rev, "git_dirty": None if status is None else bool(status)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * page_size / 2**30, 1)


@lru_cache(maxsize=1)
def hardware() -> dict[str, object]:
    """CPU model, usable cores, RAM and, where torch sees one, the GPU."""
    info: dict[str, object] = {
        "cpu": _cpu_model(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpu": None,
    }
    try:
        import torch  # noqa: PLC0415  optional: provenance also runs without torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def device_label() -> str:
    """Short hardware label for tables: the GPU name if there is one, else the CPU model and core count."""
    hw = hardware()
    return str(hw["gpu"]) if hw.get("gpu") else f"{hw['cpu']} ({hw['cpu_count']} cores)"


def collect() -> dict[str, object]:
    """All provenance fields for one result row (flat keys: hardware, versions, git, timestamp)."""
    return {
        "hardware": hardware(),
        "versions": package_versions(),
        "python": platform.python_version(),
        **git_state(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
