"""Stage `export_asset`: a textured mesh -> the asset people open: GLB, turntable, views (shared by every method).

Input `mesh`: a textured (or vertex-coloured) mesh artifact: bake_texture's output (DreamFusion) or
texture_finetune's (TextMesh). When the input also holds `mesh_before.glb` (the textured mesh before a texture
refinement, written by texture_finetune) it is carried into the asset, so `evaluate` can score both.

Output: `mesh.glb` (textured, glTF 2.0 binary), `turntable.gif`, `views.png` (ring of shaded and albedo views),
and `mesh_before.glb` where the input has one.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from stages.core.protocol import MESH_BEFORE, StageError, StageParams, require_file
from stages.shared.particles import map_particles

NAME = "export_asset"
INPUTS = ("mesh",)


class Params(StageParams):
    turntable_frames: int = Field(36, ge=1)
    turntable_size: int = Field(128, ge=16)
    turntable_fps: float = Field(12.0, gt=0)
    views: int = Field(8, ge=1)
    views_size: int = Field(128, ge=16)
    elevation: float = 15.0


def check(params: Params, inputs: dict[str, Path]) -> None:
    require_file(inputs, "mesh", "mesh.glb")


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    return map_particles(_run_one, params, inputs, out)  # a particle set: each particle (ProlificDreamer)


def _run_one(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import shutil

    from distill3d.mesh.gltf import load_glb, save_glb
    from distill3d.viz.asset_views import save_asset_views

    mesh = load_glb(Path(inputs["mesh"]) / "mesh.glb")
    if not mesh.is_coloured:
        raise StageError(f"mesh {inputs['mesh']} has no texture or colours: bake one first "
                         f"(python -m stages bake_texture --in mesh={inputs['mesh']} --in nerf=FIELD_DIR ...)")
    save_glb(mesh, out / "mesh.glb")
    before = Path(inputs["mesh"]) / MESH_BEFORE
    if before.is_file():
        shutil.copyfile(before, out / MESH_BEFORE)
    save_asset_views(mesh, out, n_frames=params.turntable_frames, frame_size=params.turntable_size,
                     fps=params.turntable_fps, n_views=params.views, views_size=params.views_size,
                     elevation=params.elevation)
    return {"vertices": int(mesh.vertices.shape[0]), "faces": int(mesh.faces.shape[0])}
