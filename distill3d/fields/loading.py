"""Load any saved field by the type recorded in its ``field.json``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from distill3d.fields.nerf import RadianceField
from distill3d.fields.sdf import SDFField

FIELD_TYPES: dict[str, type[nn.Module]] = {"RadianceField": RadianceField, "SDFField": SDFField}


def load_field(directory: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The field saved in ``directory`` (eval mode). ValueError naming the folder if it holds none."""
    d = Path(directory)
    meta_file = d / "field.json"
    if not meta_file.is_file():
        raise ValueError(f"{d} holds no field (no field.json): pass the output of a field stage such as nerf_sds")
    kind = json.loads(meta_file.read_text()).get("type")
    if kind not in FIELD_TYPES:
        raise ValueError(f"{meta_file}: unknown field type {kind!r}; known: {', '.join(FIELD_TYPES)}")
    return FIELD_TYPES[kind].load(d, device=device).eval()
