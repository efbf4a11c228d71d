"""A method's chain of stages, its params, and the all-cached fast path, WITHOUT importing Prefect.

`plan()` walks a method's stages the way its flow will: it resolves each stage's params (params.yaml section <
run-time fields < overrides), wires inputs by artifact name, computes the stage key and checks the store. When
every stage is complete, `distill3d generate` copies the outputs and returns without starting Prefect (whose
temporary server alone costs ~10 s); otherwise it runs the flow, whose tasks compute the same keys.

Stage modules are imported lazily by name (`stages.common.get_stage`), so unit tests can register fake ones.
Keep stage modules cheap to import (torch inside `run`): the fast path imports them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.common import (
    StageError,
    StageParams,
    all_inputs,
    artifact_name,
    get_stage,
    is_complete,
    load_params,
    read_manifest,
    stage_key,
)
from tasks.env import store_dir

# method -> its stages in order (each stage's INPUTS are looked up among the artifacts made before it)
METHODS: dict[str, tuple[str, ...]] = {
    "dreamfusion": ("nerf_sds", "extract_mesh", "bake_texture", "export_asset", "evaluate"),
    "textmesh": ("sdf_nerf", "extract_mesh", "render_canonical_views", "pseudo_gt", "texture_finetune",
                 "export_asset", "evaluate"),
}
# method -> its geometry stages that `init` artifacts (e.g. --init-from a DreamFusion run) replace: such a stage is
# skipped when the artifact it makes is given, and the given one is used downstream.
INIT_REPLACES: dict[str, tuple[str, ...]] = {
    "textmesh": ("sdf_nerf", "extract_mesh"),
}
# flow arguments that reach every stage whose Params declares a field of that name
RUNTIME_FIELDS = ("prompt", "seed", "device")
# stages run only when the prompt is a toy-world prompt (they compare against toy-world ground truth)
TOY_ONLY = ("evaluate",)


def default_params_file() -> Path | None:
    """$DISTILL3D_PARAMS, else ./params.yaml when present, else None (stage defaults)."""
    env = os.environ.get("DISTILL3D_PARAMS")
    if env:
        return Path(env)
    return Path("params.yaml") if Path("params.yaml").is_file() else None


def is_toy_prompt(prompt: str) -> bool:
    """True when the toy world can parse `prompt` (so its ground truth exists to evaluate against)."""
    try:
        from distill3d.toyworld.vocab import parse_prompt
    except ImportError:
        return False
    try:
        parse_prompt(prompt)
    except ValueError:
        return False
    return True


def stage_params(
    name: str,
    runtime: Mapping[str, Any],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    params_file: Path | None = None,
) -> StageParams:
    """Validated params of stage `name`: its params.yaml section, then the run-time fields its Params declares
    (prompt, seed, device), then `overrides[name]` ({dotted.key: value})."""
    module = get_stage(name)
    fields = module.Params.model_fields
    merged: dict[str, Any] = {k: v for k, v in runtime.items() if k in fields}
    merged.update((overrides or {}).get(name) or {})
    return load_params(module, params_file, name, merged)


def check_overrides(method: str, overrides: Mapping[str, Any] | None) -> None:
    unknown = sorted(set(overrides or {}) - set(METHODS[method]))
    if unknown:
        raise StageError(f"params for unknown stage(s) {unknown}; {method} has {list(METHODS[method])}")


@dataclass
class Step:
    """One stage of a plan. `key`/`out` are None when an upstream output does not exist yet."""

    name: str
    params: StageParams
    inputs: dict[str, Path]
    key: str | None = None
    out: Path | None = None
    complete: bool = False


@dataclass
class Plan:
    method: str
    prompt: str
    steps: list[Step] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.steps) and all(s.complete for s in self.steps)

    @property
    def outputs(self) -> dict[str, str]:
        """{stage: output dir} for the steps whose output exists."""
        return {s.name: str(s.out) for s in self.steps if s.complete}


def plan(
    prompt: str,
    prior: str | Path = "models/toy_prior",
    params: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    device: str = "cpu",
    params_file: Path | None = None,
    method: str = "dreamfusion",
    init: Mapping[str, str | Path] | None = None,
) -> Plan:
    """Resolve and validate every stage of `method` and check the store, without running or importing Prefect.

    `init` {artifact: dir} seeds the chain (see INIT_REPLACES and `init_artifacts`): stages of INIT_REPLACES whose
    artifact is given are skipped; other given artifacts (e.g. `init_mesh`) reach the stages that take them.
    Optional inputs (a stage's OPTIONAL_INPUTS) are wired whenever an earlier stage or `init` made them.

    `params_file` None means `default_params_file()`, as in the flow. Raises StageError (one line) for bad params,
    unknown stages or a missing prior, before anything runs.
    """
    params_file = Path(params_file) if params_file is not None else default_params_file()
    if method not in METHODS:
        raise StageError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if not prompt or not prompt.strip():
        raise StageError("empty prompt")
    check_overrides(method, params)
    if not Path(prior).exists():
        raise StageError(f"prior not found at {prior}: run `dvc repro train_prior` or pass --prior DIR")
    runtime = {"prompt": prompt, "seed": seed, "device": device}
    toy = is_toy_prompt(prompt)
    available: dict[str, Path | None] = {"prior": Path(prior)}
    available.update({k: Path(v) for k, v in (init or {}).items()})
    replaced = init_replaced(method, init or {})
    result = Plan(method=method, prompt=prompt)
    for name in METHODS[method]:
        if name in TOY_ONLY and not toy:
            continue
        module = get_stage(name)
        if name in replaced:
            continue
        p = stage_params(name, runtime, params, params_file)
        missing = [n for n in module.INPUTS if n not in available]
        if missing:
            raise StageError(f"stage {name} needs {missing}, which no earlier stage of {method} makes")
        wired = [n for n in all_inputs(module) if n in available]
        step = Step(name=name, params=p, inputs={n: available[n] for n in wired})  # type: ignore[misc]
        if all(path is not None for path in step.inputs.values()):
            if hasattr(module, "check"):
                module.check(p, step.inputs)
            step.key = stage_key(module, p, step.inputs)
            step.out = store_dir(name, step.key)
            step.complete = is_complete(step.out, step.key)
        available[artifact_name(module)] = step.out if step.complete else None
        result.steps.append(step)
    return result


def init_replaced(method: str, init: Mapping[str, Any]) -> tuple[str, ...]:
    """The stages of INIT_REPLACES[method] that `init` skips: all up to the last one whose artifact is given."""
    stages = INIT_REPLACES.get(method, ())
    given = [i for i, name in enumerate(stages) if artifact_name(get_stage(name)) in init]
    return stages[: given[-1] + 1] if given else ()


def chain_manifest(plan_or_outputs: Plan | Mapping[str, str]) -> dict[str, Any]:
    """{stage: {key, seconds, params, extra, content_hash, code_version, out}} read from each output's manifest."""
    outputs = plan_or_outputs.outputs if isinstance(plan_or_outputs, Plan) else plan_or_outputs
    chain = {}
    for name, out in outputs.items():
        m = read_manifest(Path(out)) or {}
        chain[name] = {k: m.get(k) for k in ("key", "seconds", "params", "extra", "content_hash", "code_version")}
        chain[name]["out"] = str(out)
    return chain
