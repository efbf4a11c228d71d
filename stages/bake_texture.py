"""Stage `bake_texture`: UV-unwrap a mesh (xatlas) and bake a colour field's albedo into its texture atlas.

DreamFusion's appearance step: the NeRF's albedo at each texel's surface point (distill3d.mesh.uv.ensure_texture).
Input `mesh` (extract_mesh's output, or any artifact with a mesh.glb) and the field `nerf` whose albedo is baked; a
mesh that already has a texture is kept as it is, one with vertex colours can be baked without a field.
Output: `mesh.glb` (a textured "mesh" artifact: what export_asset packs), `texture.png`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from stages.core.protocol import StageError, StageParams, require_file
from stages.shared.particles import map_particles

NAME = "bake_texture"
INPUTS = ("mesh",)
OPTIONAL_INPUTS = ("nerf",)  # the colour field; needed unless the mesh has a texture or vertex colours


class Params(StageParams):
    texture_size: int = Field(512, ge=16, le=4096)
    # simplify the mesh to at most this many faces before unwrapping (xatlas: 68k faces 21 s, 10k ~1 s); None: as it is
    max_faces: int | None = Field(10000, ge=100)


def check(params: Params, inputs: dict[str, Path]) -> None:
    require_file(inputs, "mesh", "mesh.glb", "pass an extract_mesh output")


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    return map_particles(_run_one, params, inputs, out)  # a particle set: each particle (ProlificDreamer)


def _run_one(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    from distill3d.fields.loading import load_field
    from distill3d.mesh.gltf import load_glb, save_glb
    from distill3d.mesh.uv import ensure_texture
    from distill3d.viz.grid import save_grid

    mesh = load_glb(Path(inputs["mesh"]) / "mesh.glb")
    source = "mesh" if mesh.has_uv_texture else "vertex colours" if mesh.vertex_colors is not None else "field"
    if source == "field" and "nerf" not in inputs:
        raise StageError(f"mesh {inputs['mesh']} has no texture or colours: pass its field as --in nerf=DIR")
    field = load_field(inputs["nerf"]) if source == "field" else None
    mesh = ensure_texture(mesh, None if field is None else field.albedo, params.texture_size, params.max_faces)
    save_glb(mesh, out / "mesh.glb")
    save_grid(mesh.texture[None], out / "texture.png", ncols=1)
    return {"texture_source": source, "vertices": int(mesh.vertices.shape[0]), "faces": int(mesh.faces.shape[0])}
