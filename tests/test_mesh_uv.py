"""xatlas unwrap and UV-space texture baking: the baked texture reproduces the colour function when rendered."""

import torch
import trimesh

from distill3d.cameras import spherical_cameras, world_to_clip
from distill3d.mesh.rasterize import interpolate, rasterize
from distill3d.mesh.render import render_mesh
from distill3d.mesh.types import TexturedMesh
from distill3d.mesh.uv import bake_texture, ensure_texture, unwrap, uv_clip


def sphere(subdivisions: int = 3) -> TexturedMesh:
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.7)
    return TexturedMesh(torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int64))


def colour_fn(p: torch.Tensor) -> torch.Tensor:
    """A smooth colour field with structure in every direction."""
    return 0.5 + 0.45 * torch.stack([torch.sin(3 * p[:, 0]), torch.cos(2 * p[:, 1] + 1), p[:, 2] / 0.7], -1)


def test_unwrap_splits_vertices_but_keeps_geometry():
    m = sphere(2)
    m.vertex_colors = (m.vertices + 1) / 2
    u = unwrap(m, resolution=128)
    assert u.uv.shape == (len(u.vertices), 2) and len(u.vertices) > len(m.vertices)  # split along seams
    assert u.uv.min() >= 0 and u.uv.max() <= 1
    assert torch.equal(u.vertices[u.faces], m.vertices[m.faces])  # same triangles in the same order
    assert torch.allclose(u.vertex_colors, (u.vertices + 1) / 2)
    # Charts do not overlap: rasterised UV coverage equals the total UV area.
    uvf = u.uv[u.faces]
    e1, e2 = uvf[:, 1] - uvf[:, 0], uvf[:, 2] - uvf[:, 0]
    area = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs().sum()
    cover = rasterize(uv_clip(u.uv), u.faces, 256).mask.float().mean()
    assert abs(cover.item() - area.item()) < 0.02


def test_baked_texture_reproduces_colour_function():
    m = unwrap(sphere(3), resolution=256)
    baked = bake_texture(m, colour_fn, size=256, padding=4)
    assert baked.texture.shape == (256, 256, 3)
    cams = spherical_cameras([0.0, 120.0, 240.0, 45.0], [10.0, -20.0, 30.0, 80.0], radius=2.6)
    rgb = render_mesh(baked, cams, 64, mode="albedo")["rgb"]
    # Reference: the colour function at the exact surface point each pixel sees.
    frags = rasterize(world_to_clip(baked.vertices, cams), baked.faces, 64)
    pts = interpolate(baked.vertices, frags, baked.faces)
    ref = colour_fn(pts[frags.mask])
    err = (rgb[frags.mask] - ref).abs()
    assert err.mean() < 0.01 and err.max() < 0.1, (err.mean(), err.max())


def test_no_background_bleeds_across_seams():
    """A constant colour must render as that constant everywhere, seams included (dilation fills the gutters)."""
    m = unwrap(sphere(2), resolution=64)
    baked = bake_texture(m, lambda p: torch.full_like(p, 0.3), size=64, padding=4)
    cams = spherical_cameras([0.0, 90.0, 180.0, 270.0], [20.0] * 4, radius=2.6)
    out = render_mesh(baked, cams, 48, mode="albedo")
    inside = out["mask"] > 0
    assert torch.allclose(out["rgb"][inside], torch.full((3,), 0.3), atol=1e-5)
    # Without the fill, some rendered pixels would read the black gutter (so the check above can fail).
    filled = rasterize(uv_clip(m.uv), m.faces, 64).mask[0]
    baked.texture[~filled] = 0.0
    raw_out = render_mesh(baked, cams, 48, mode="albedo")["rgb"][inside]
    assert (raw_out - 0.3).abs().max() > 0.05


def test_simplify_keeps_the_shape_with_fewer_faces() -> None:
    """Unwrapping a marching-cubes mesh of ~50k faces takes xatlas ~20 s: ensure_texture first simplifies it; the
    simplified sphere stays on the sphere and keeps its volume."""
    import trimesh

    from distill3d.mesh.extract import extract_isosurface, grid_points
    from distill3d.mesh.simplify import simplify

    pts = grid_points(96, 1.0)
    mesh = extract_isosurface(0.6 - pts.norm(dim=-1), 0.0)  # a sphere of radius 0.6, inside = above
    assert mesh.faces.shape[0] > 20000
    small = simplify(mesh, 3000)
    assert small.faces.shape[0] <= 3000 and simplify(small, 3000) is small
    radius = small.vertices.norm(dim=-1)
    assert (radius - 0.6).abs().max() < 0.02
    full, reduced = (trimesh.Trimesh(m.vertices.numpy(), m.faces.numpy()) for m in (mesh, small))
    assert abs(reduced.volume - full.volume) / full.volume < 0.02  # still closed and outward-facing
    textured = ensure_texture(mesh, lambda p: torch.ones_like(p) * 0.5, size=64, max_faces=3000)
    assert textured.faces.shape[0] <= 3000 and textured.has_uv_texture
