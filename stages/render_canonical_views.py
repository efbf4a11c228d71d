"""Stage `render_canonical_views`: the mesh with its current texture from TextMesh's 4 canonical views (front,
right, back, left at one elevation), with masks and depth, tiled 2x2 into one image.

Input `mesh`: any artifact holding a mesh.glb -- a textured asset (e.g. DreamFusion's export_asset output), or an
untextured mesh (extract_mesh) together with the optional field `nerf`, whose albedo is then baked into a fresh
xatlas UV atlas (as bake_texture does). Output: `mesh.glb` (the textured mesh the views show: the "before" of
texture fine-tuning, evaluable as an asset), `views.safetensors` (rgb, albedo, mask, depth: (4, H, W, ...)),
`cameras.json`, `canonical.png` (the 2x2 tile of shaded views) and `masks.png`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from stages.core.protocol import StageParams, require_file

NAME = "render_canonical_views"
INPUTS = ("mesh",)
OPTIONAL_INPUTS = ("nerf",)


class Params(StageParams):
    elevation: float = 15.0
    radius: float = Field(2.6, gt=0)
    fov: float = Field(40.0, gt=0, lt=180)
    size: int = Field(64, ge=8)
    ssaa: int = Field(2, ge=1)
    texture_size: int = Field(512, ge=16, le=4096)  # when the field's albedo is baked into a new atlas
    # simplify the mesh to at most this many faces before unwrapping (xatlas: 68k faces 21 s, 10k ~1 s); None: as it is
    max_faces: int | None = Field(10000, ge=100)


def check(params: Params, inputs: dict[str, Path]) -> None:
    require_file(inputs, "mesh", "mesh.glb")


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import json

    from safetensors.torch import save_file

    from distill3d.fields.loading import load_field
    from distill3d.mesh.gltf import load_glb, save_glb
    from distill3d.mesh.uv import ensure_texture
    from distill3d.texture.canonical import CANONICAL_NAMES, canonical_cameras, render_views, tile_2x2
    from distill3d.viz.grid import save_grid

    mesh = load_glb(Path(inputs["mesh"]) / "mesh.glb")
    field = load_field(inputs["nerf"]) if "nerf" in inputs else None
    mesh = ensure_texture(mesh, None if field is None else field.albedo, params.texture_size, params.max_faces)
    save_glb(mesh, out / "mesh.glb")
    cams = canonical_cameras(params.elevation, params.radius, params.fov)
    views = render_views(mesh, cams, params.size, ssaa=params.ssaa)
    save_file({k: v.contiguous() for k, v in views.items()}, str(out / "views.safetensors"))
    (out / "cameras.json").write_text(json.dumps({
        "names": list(CANONICAL_NAMES), "azimuth": cams.azimuth.tolist(), "elevation": params.elevation,
        "radius": params.radius, "fov": params.fov, "size": params.size}, indent=2))
    save_grid(tile_2x2(views["rgb"])[None], out / "canonical.png", ncols=1)
    save_grid(tile_2x2(views["mask"])[None], out / "masks.png", ncols=1)
    return {"coverage": [float(m.mean()) for m in views["mask"]], "faces": int(mesh.faces.shape[0]),
            "texture_source": "mesh" if field is None else "field"}
