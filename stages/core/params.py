"""Stage params: params.yaml sections, `--set` overrides, validation into one-line errors, canonical JSON."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from stages.core.protocol import StageError, StageParams


def parse_override(item: str) -> tuple[str, Any]:
    """'a.b=v' -> ('a.b', v) with v read as JSON (numbers, true/false, null, lists) or else kept as a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise StageError(f"bad --set {item!r}: expected KEY=VALUE, e.g. guidance.guidance_scale=50")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
        if raw.strip().startswith(("[", "{")):
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.safe_load(raw)
    return key, value


def set_dotted(data: dict, key: str, value: Any) -> None:
    """data['a']['b'] = value for key 'a.b', creating dicts on the way; dict values are merged, not replaced."""
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise StageError(f"cannot set {key!r}: {'.'.join(parents[: i + 1])} is not a mapping")
        node = child
    if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
        for k, v in value.items():
            set_dotted(node[leaf], str(k), v)
    else:
        node[leaf] = dict(value) if isinstance(value, Mapping) else value


def read_params_file(params_file: Path) -> dict:
    """The whole params.yaml as a dict (StageError if missing or not YAML)."""
    try:
        data = yaml.safe_load(Path(params_file).read_text())
    except FileNotFoundError:
        raise StageError(f"params file {params_file} not found") from None
    except yaml.YAMLError as exc:
        raise StageError(f"params file {params_file} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StageError(f"params file {params_file} must be a mapping of sections")
    return data


def _written_path(loc: tuple, data: Any) -> list:
    """Pydantic's error location as the user wrote it: a tagged union's tag (the "sds" of guidance.sds.guidance_scale,
    for guidance kind sds) is no key of the data, so it is left out."""
    out, node = [], data
    for i, part in enumerate(loc):
        if isinstance(node, Mapping) and part not in node and i < len(loc) - 1:
            continue
        out.append(part)
        node = node.get(part) if isinstance(node, Mapping) else None
    return out


def format_validation_error(exc: ValidationError, section: str, data: Any = None) -> str:
    """One line naming each bad field path as written in ``data`` (the section's values), e.g.
    'invalid param nerf_sds.guidance.guidance_scale: ... (got -1)'."""
    parts = []
    for err in exc.errors():
        path = ".".join([section, *(str(p) for p in _written_path(err["loc"], data))])
        got = err.get("input")
        shown = "" if err["type"] == "missing" else repr(got) if isinstance(got, str) else str(got)
        shown = " ".join(shown.split())
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        parts.append(f"{path}: {err['msg']}" + (f" (got {shown})" if shown else ""))
    return "invalid param " + "; ".join(parts)


def validate_params(stage_module: ModuleType, data: Mapping, section: str | None = None) -> StageParams:
    """`stage_module.Params` from a dict, ValidationError -> one-line StageError."""
    try:
        return stage_module.Params.model_validate(dict(data))
    except ValidationError as exc:
        raise StageError(format_validation_error(exc, section or stage_module.NAME, data)) from None


def load_params(
    stage_module: ModuleType,
    params_file: Path | None = None,
    section: str | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
) -> StageParams:
    """A stage's validated Params: section `section` (default: the stage's NAME) of `params_file`, then overrides.

    `overrides` is a dict {dotted.key: value} (values used as given, dicts merged) or a list of 'dotted.key=value'
    strings (values read as JSON, else strings). A missing section means the stage's defaults.
    """
    section = section or stage_module.NAME
    data: dict = {}
    if params_file is not None:
        whole = read_params_file(Path(params_file))
        if section not in whole and section != stage_module.NAME:
            raise StageError(f"params file {params_file} has no section {section!r}")
        found = whole.get(section) or {}
        if not isinstance(found, dict):
            raise StageError(f"section {section!r} of {params_file} must be a mapping, got {found!r}")
        data = json.loads(json.dumps(found))  # deep copy
    items = overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides or ())
    for key, value in items:
        set_dotted(data, key, value)
    return validate_params(stage_module, data, section)


def params_json(params: BaseModel) -> str:
    """Canonical JSON of params (sorted keys, no spaces): the form that enters the stage key."""
    return json.dumps(params.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
