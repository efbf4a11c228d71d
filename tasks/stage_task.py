"""`stage_task(stage_module)`: a Prefect task that runs a stage into the content-addressed store.

The task's cache key is the stage key (stage name + code version + params + input contents, never paths), so a
task hits across processes and flows exactly when the stage would produce the same output. A missing or
incomplete store directory is a miss: the key function then deletes the stale result record, so the task runs,
re-creates the directory, and the next identical call is `Cached` again (returning None instead would leave the
result stored under no key and the repeat call would run once more).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import tasks  # noqa: F401  (sets Prefect's environment before prefect is imported)
from prefect import Task, task
from prefect.context import TaskRunContext
from stages.core.execute import execute
from stages.core.home import distill3d_home
from stages.core.keys import stage_key
from stages.core.params import validate_params
from stages.core.store import is_complete, store_dir
from tasks.env import results_dir


def _cache_key_fn(stage_module: ModuleType):
    name = stage_module.NAME

    def cache_key(ctx: TaskRunContext, arguments: dict[str, Any]) -> str | None:
        if arguments.get("force"):
            return None
        try:  # bad params or inputs: no key here, the task body raises the one-line error
            params = validate_params(stage_module, arguments["params"])
            key = stage_key(stage_module, params, arguments["inputs"])
        except Exception:
            return None
        record = f"{name}-{key}"
        if not is_complete(store_dir(name, key), key):
            (results_dir() / record).unlink(missing_ok=True)
        return record

    return cache_key


@lru_cache(maxsize=None)
def _stage_task(stage_module: ModuleType, home: Path, retries: int) -> Task:
    name = stage_module.NAME

    def run_stage(params: dict[str, Any], inputs: dict[str, str], force: bool = False) -> str:
        p = validate_params(stage_module, params)
        out = store_dir(name, stage_key(stage_module, p, inputs))
        return str(execute(stage_module, p, inputs, out, force=force))

    run_stage.__name__ = run_stage.__qualname__ = f"stage_{name}"
    run_stage.__doc__ = (stage_module.__doc__ or f"Stage {name}.").strip().splitlines()[0]
    return task(
        run_stage,
        name=name,
        cache_key_fn=_cache_key_fn(stage_module),
        persist_result=True,
        result_storage=home / "prefect" / "results",
        retries=retries,
    )


def stage_task(stage_module: ModuleType, retries: int = 0) -> Task:
    """The Prefect task for a stage: call it as `task(params=dict, inputs={name: path_str})` -> output dir (str).

    `params` is the stage's Params as a dict (validated inside); the output lands in
    `$DISTILL3D_HOME/store/<stage>/<key[:16]>`. Built per DISTILL3D_HOME (read at call time) and memoised.
    """
    return _stage_task(stage_module, distill3d_home(), retries)
