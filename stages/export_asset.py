"""Stage `export_asset`: UV-unwrap the mesh (xatlas), bake the field's albedo into a texture and write the asset.

The colour field `nerf` is optional: a mesh that already has a texture (e.g. texture_finetune's output) or vertex
colours is exported as it is (the field, if given, is then not used); an untextured mesh needs the field.

Output: `mesh.glb` (textured, glTF 2.0 binary), `turntable.gif`, `views.png` (ring of shaded and albedo views).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from stages.common import StageError, StageParams

NAME = "export_asset"
INPUTS = ("mesh",)
OPTIONAL_INPUTS = ("nerf",)  # the colour field, baked when the mesh has no colours of its own


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

    mesh = load_glb(Path(inputs["mesh"]) / "mesh.glb")
    coloured = (mesh.texture is not None and mesh.uv is not None) or mesh.vertex_colors is not None
    if not coloured:
        if "nerf" not in inputs:
            raise StageError(f"mesh {inputs['mesh']} has no texture or colours: pass the field as --in nerf=DIR")
        field = load_field(inputs["nerf"])
        with torch.no_grad():
            mesh = bake_texture(unwrap(mesh), field.albedo, size=params.texture_size)
    save_glb(mesh, out / "mesh.glb")
    save_asset_views(mesh, out, n_frames=params.turntable_frames, frame_size=params.turntable_size,
                     fps=params.turntable_fps, n_views=params.views, views_size=params.views_size,
                     elevation=params.elevation)
    return {"vertices": int(mesh.vertices.shape[0]), "faces": int(mesh.faces.shape[0])}
