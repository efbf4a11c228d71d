"""``execute``: run a stage into an output directory exactly once per stage key, atomically."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

from stages.core.code import code_version
from stages.core.keys import MANIFEST, dir_content_hash, stage_key
from stages.core.protocol import StageParams, check_inputs
from stages.core.store import dir_lock, is_complete, temp_beside, work_path

MANIFEST_FORMAT = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def execute(
    stage_module: ModuleType,
    params: StageParams,
    inputs: Mapping[str, Path | str],
    out_dir: Path,
    force: bool = False,
) -> Path:
    """Run `stage_module` into `out_dir` unless it already holds a complete output with the same stage key.

    Returns `out_dir`. The stage writes into a temp dir beside `out_dir` that is renamed into place after its
    manifest.json (stage, key, params, input hashes, code version, times, `run`'s extras, content hash) is
    written, so an interrupted run never leaves a complete-looking dir. Concurrent calls for one `out_dir`
    serialise on a file lock; the second finds the first's output and returns it without running.
    """
    out_dir = Path(out_dir).absolute()
    inputs = {name: Path(p) for name, p in inputs.items()}
    check_inputs(stage_module, inputs)
    if hasattr(stage_module, "check"):
        stage_module.check(params, inputs)
    key = stage_key(stage_module, params, inputs)
    if not force and is_complete(out_dir, key):
        return out_dir
    with dir_lock(out_dir):
        if not force and is_complete(out_dir, key):  # made by another process while we waited for the lock
            return out_dir
        with temp_beside(out_dir) as tmp:
            started, t0 = _now(), time.perf_counter()
            extra = stage_module.run(params, dict(inputs), tmp)
            manifest = {
                "format": MANIFEST_FORMAT,
                "stage": stage_module.NAME,
                "key": key,
                "params": params.model_dump(mode="json"),
                "inputs": {n: {"hash": dir_content_hash(p), "path": str(p)} for n, p in inputs.items()},
                "code_version": code_version(stage_module),
                "started": started,
                "finished": _now(),
                "seconds": round(time.perf_counter() - t0, 3),
                "extra": extra or {},
                "content_hash": dir_content_hash(tmp, use_cache=False),
                "complete": True,
            }
            with open(tmp / MANIFEST, "w") as f:
                f.write(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
                f.flush()
                os.fsync(f.fileno())
    shutil.rmtree(work_path(stage_module.NAME, key), ignore_errors=True)
    return out_dir
