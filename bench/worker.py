"""One benchmark run in its own process: `<launcher> -m bench.worker SPEC.json RESULT.json`.

The runner starts this under `torchrun`/`accelerate launch` (its `--launcher` option) so one run can use several
GPUs. Every rank trains (the Trainer picks up the distributed environment the launcher sets); rank 0 alone writes
RESULT.json, atomically: {"result": {...}} on success, {"error": {type, message, traceback}} on failure.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

from bench import records, runner
from bench.experiment import RunConfig
from bench.profiles import RunSpec


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world_size() -> int:
    """Processes that trained together: the initialised process group's size, else 1 (no DDP)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def load_spec(path: Path):
    """The RunSpec (and cache dir) that the runner wrote with runner.spec_to_json."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    config = dict(payload["config"])
    config["method_args"] = tuple((k, v) for k, v in config.get("method_args", ()))
    spec = RunSpec(RunConfig(**config), kind=payload["kind"], alphas=tuple(payload["alphas"]))
    log_dir = payload.get("log_dir")
    return spec, Path(payload["cache_dir"]), Path(log_dir) if log_dir else None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.worker SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec_path, result_path = Path(args[0]), Path(args[1])
    spec, cache_dir, log_dir = load_spec(spec_path)

    try:
        # This process runs this cell alone, entered after the imports: its RSS rise is the run's CPU peak memory.
        result = runner.execute(spec, work_dir=spec_path.parent, cache_dir=cache_dir, progress=_rank() == 0,
                                log_dir=log_dir, measure_cpu_memory=True)  # fmt: skip
        payload, code = {"result": {**result, "world_size": _world_size()}}, 0
    except Exception as err:
        payload, code = {"error": runner.error_fields(err)}, 1
    if _rank() == 0:
        records.atomic_write_text(result_path, records.dumps(payload) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
