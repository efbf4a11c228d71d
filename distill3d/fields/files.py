"""A saved field's two files, shared by every field type: ``field.json`` (its type and config) and
``field.safetensors`` (its weights)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn


def write_field(field: nn.Module, directory: str | Path, kind: str, config: dict) -> None:
    """Write ``field``'s type ``kind``, ``config`` and weights into ``directory`` (created)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "field.json").write_text(json.dumps({"type": kind, "config": config}, indent=2))
    save_file({k: v.detach().cpu().contiguous() for k, v in field.state_dict().items()}, str(d / "field.safetensors"))


def read_field(directory: str | Path, kind: str) -> tuple[dict, dict]:
    """The config and the weights of the field of type ``kind`` saved in ``directory``; ValueError (naming the type
    it holds and the loader that reads any type) if it holds another type."""
    from safetensors.torch import load_file

    d = Path(directory)
    meta = json.loads((d / "field.json").read_text())
    if meta.get("type") != kind:
        raise ValueError(f"{d} holds a field of type {meta.get('type')!r}, not {kind!r}: load it with "
                         "distill3d.fields.loading.load_field, which reads the type from field.json")
    return meta["config"], load_file(str(d / "field.safetensors"))
