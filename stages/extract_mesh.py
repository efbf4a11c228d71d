"""Stage `extract_mesh`: a triangle mesh from a field by marching cubes (largest component kept).

SDF fields (those with `iso_inside = "below"`, e.g. sdf_nerf's) are meshed at their zero level (`level` "auto"),
closed wherever the SDF is. For density fields the iso-level is chosen automatically by default: among candidate
density levels, the one whose mesh silhouettes best match the field's own rendered opacity (IoU over a ring of
views). No hand-tuned threshold.
Output: `mesh.glb` (untextured), `level.json` (the chosen level, the IoU of each candidate, `watertight`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from stages.core.protocol import StageParams

NAME = "extract_mesh"
INPUTS = ("nerf",)


class Params(StageParams):
    resolution: int = Field(128, ge=16, le=512)
    level: float | Literal["auto"] = "auto"
    candidate_levels: list[float] = Field(default_factory=lambda: [2.0, 5.0, 10.0, 20.0, 40.0])
    keep_largest: bool = True
    match_views: int = Field(8, ge=1)
    match_size: int = Field(64, ge=16)


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import json

    import torch
    import trimesh

    from distill3d.fields.loading import load_field
    from distill3d.mesh.extract import extract_isosurface, sample_grid
    from distill3d.mesh.gltf import save_glb
    from distill3d.mesh.level import choose_level

    field = load_field(inputs["nerf"])
    inside = getattr(field, "iso_inside", "above")  # SDF fields: "below", at their own zero level
    with torch.no_grad():
        values = sample_grid(field.sdf if inside == "below" else field.density, params.resolution, bound=field.bound)
    if inside == "below":
        level, scores = (field.iso_level if params.level == "auto" else float(params.level)), {}
    elif params.level == "auto":
        level, scores = choose_level(field, values, params.candidate_levels, params.match_views, params.match_size)
    else:
        level, scores = float(params.level), {}
    mesh = extract_isosurface(values, level, bound=field.bound, inside=inside, keep_largest=params.keep_largest)
    save_glb(mesh, out / "mesh.glb")
    watertight = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False).is_watertight
    info = {"level": level, "inside": inside, "watertight": bool(watertight), "candidate_iou": scores,
            "vertices": int(mesh.vertices.shape[0]), "faces": int(mesh.faces.shape[0])}
    (out / "level.json").write_text(json.dumps(info, indent=2))
    return info
