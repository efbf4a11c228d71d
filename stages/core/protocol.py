"""The stage protocol (see stages/core/__init__.py), the stage registry and the declared inputs of a stage."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from pydantic import BaseModel, ConfigDict

# A textured mesh artifact may hold the textured mesh it was refined from (texture_finetune writes it, export_asset
# carries it into the asset, evaluate scores it as the "before").
MESH_BEFORE = "mesh_before.glb"
REQUIRED = ("NAME", "INPUTS", "Params", "run")


class StageParams(BaseModel):
    """Base of every stage's `Params`: unknown fields are errors, nested models allowed."""

    model_config = ConfigDict(extra="forbid")


class StageError(Exception):
    """A one-line, user-facing error (bad params, missing input, ...). The CLIs print it without a traceback."""


_REGISTRY: dict[str, ModuleType] = {}


def register_stage(module: ModuleType, name: str | None = None) -> None:
    """Make `get_stage(name)` return `module` (tests inject fake stages this way)."""
    _REGISTRY[name or module.NAME] = module


def unregister_stage(name: str) -> None:
    _REGISTRY.pop(name, None)


def stage_names() -> list[str]:
    """The stages of the `stages` package: its top-level modules (subpackages hold machinery and helpers)."""
    import stages

    return sorted(m.name for m in pkgutil.iter_modules(stages.__path__) if not m.ispkg and not m.name.startswith("_"))


def get_stage(name: str) -> ModuleType:
    """The stage module for `name`: a registered one, `stages.<name>`, or a dotted module path."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if "." not in name and name not in stage_names():
        raise StageError(f"unknown stage {name!r}; stages: {', '.join(stage_names())}")
    module_name = name if "." in name else f"stages.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (module_name, "stages"):
            raise StageError(f"unknown stage {name!r} (no module {module_name})") from None
        raise
    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    if missing:
        raise StageError(f"module {module_name} is not a stage: it lacks {', '.join(missing)} "
                         "(see stages/core/__init__.py for the protocol)")
    return module


def all_inputs(stage_module: ModuleType) -> tuple[str, ...]:
    """INPUTS then OPTIONAL_INPUTS (inputs a stage uses when given, e.g. bake_texture's colour field)."""
    return tuple(stage_module.INPUTS) + tuple(getattr(stage_module, "OPTIONAL_INPUTS", ()))


def check_inputs(stage_module: ModuleType, inputs: Mapping[str, Path | str]) -> None:
    """StageError for an input the stage does not take, a required one missing, or one that does not exist."""
    extra = sorted(set(inputs) - set(all_inputs(stage_module)))
    if extra:
        raise StageError(f"stage {stage_module.NAME} takes inputs {list(all_inputs(stage_module))}, not {extra}")
    for name in all_inputs(stage_module):
        if name not in inputs:
            if name in stage_module.INPUTS:
                raise StageError(f"stage {stage_module.NAME} needs input {name!r}: pass --in {name}=DIR")
            continue
        if not Path(inputs[name]).exists():
            raise StageError(f"input {name!r} of stage {stage_module.NAME} not found at {inputs[name]} "
                             "(an upstream stage makes it: `dvc repro` or `distill3d generate` runs the chain)")


def require_file(inputs: Mapping[str, Path | str], name: str, file: str, hint: str = "") -> None:
    """StageError unless input artifact ``name`` holds ``file``; ``hint`` says what to pass instead."""
    if not (Path(inputs[name]) / file).is_file():
        raise StageError(f"input {name} {inputs[name]} holds no {file}" + (f" ({hint})" if hint else ""))
