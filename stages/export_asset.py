"""Stage `export_asset`: UV-unwrap the mesh (xatlas), bake the field's albedo into a texture and write the asset.

Output: `mesh.glb` (textured, glTF 2.0 binary), `turntable.gif`, `views.png` (ring of shaded and albedo views).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from stages.common import StageParams

NAME = "export_asset"
INPUTS = ("mesh", "nerf")


class Params(StageParams):
    texture_size: int = Field(512, ge=16, le=4096)
    turntable_frames: int = Field(36, ge=1)
    turntable_size: int = Field(128, ge=16)
    turntable_fps: float = Field(12.0, gt=0)
    views: int = Field(8, ge=1)
    views_size: int = Field(128, ge=16)
    elevation: float = 15.0


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import torch

    from distill3d.fields.loading import load_field
    from distill3d.mesh.gltf import load_glb, save_glb
    from distill3d.mesh.uv import bake_texture, unwrap
    from distill3d.viz.asset_views import save_asset_views

    field = load_field(inputs["nerf"])
    mesh = load_glb(Path(inputs["mesh"]) / "mesh.glb")
    with torch.no_grad():
        mesh = bake_texture(unwrap(mesh), field.albedo, size=params.texture_size)
    save_glb(mesh, out / "mesh.glb")
    save_asset_views(mesh, out, n_frames=params.turntable_frames, frame_size=params.turntable_size,
                     fps=params.turntable_fps, n_views=params.views, views_size=params.views_size,
                     elevation=params.elevation)
    return {"vertices": int(mesh.vertices.shape[0]), "faces": int(mesh.faces.shape[0])}
