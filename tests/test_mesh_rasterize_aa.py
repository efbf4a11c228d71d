"""Silhouette gradients (antialias.py): antialiased coverage is the projected area, its gradient w.r.t. vertex positions
matches finite differences, colours blend only across silhouettes."""

import pytest
import torch
import trimesh

from distill3d.cameras import spherical_cameras, world_to_clip
from distill3d.mesh.antialias import antialias
from distill3d.mesh.rasterize import clip_to_pixels, rasterize
from distill3d.mesh.surface import render_surface
from distill3d.mesh.topology import edge_topology


def coverage(verts: torch.Tensor, faces: torch.Tensor, cams, size: int) -> torch.Tensor:
    """(B, H, W) antialiased coverage of the mesh."""
    clip = world_to_clip(verts, cams)
    frags = rasterize(clip, faces, size)
    return antialias(frags.mask.float()[..., None], frags, clip, faces)[..., 0]


def central_difference(fn, x: torch.Tensor, direction: torch.Tensor, h: float) -> float:
    return float((fn(x + h * direction) - fn(x - h * direction)) / (2 * h))


TRIANGLE = torch.tensor([[-0.5, -0.4, 0.0], [0.6, -0.3, 0.0], [0.05, 0.55, 0.0]])


def test_triangle_coverage_is_its_area_and_its_gradient_matches_finite_differences():
    cams = spherical_cameras([0.0], [0.0], radius=3.0, fov=40.0)
    faces = torch.tensor([[0, 1, 2]])
    size = 32

    def area(v):  # exact projected area in pixels^2
        p = clip_to_pixels(world_to_clip(v, cams), size)[0]
        e0, e1 = p[1] - p[0], p[2] - p[0]
        return 0.5 * (e0[0] * e1[1] - e0[1] * e1[0]).abs()

    def total(v):
        return coverage(v, faces, cams, size).sum()

    hard = rasterize(world_to_clip(TRIANGLE, cams), faces, size).mask.sum()
    assert abs(float(total(TRIANGLE)) - float(area(TRIANGLE))) < 0.01 * float(area(TRIANGLE))
    assert abs(float(hard) - float(area(TRIANGLE))) > abs(float(total(TRIANGLE)) - float(area(TRIANGLE)))

    v = TRIANGLE.clone().requires_grad_(True)
    total(v).backward()
    va = TRIANGLE.clone().requires_grad_(True)
    area(va).backward()
    for i in range(3):
        for axis in range(2):
            d = torch.zeros(3, 3)
            d[i, axis] = 1.0
            fd = central_difference(total, TRIANGLE, d, 1e-3)  # 1e-3 world units ~ 0.02 pixel
            assert float(v.grad[i, axis]) == pytest.approx(fd, rel=0.02, abs=0.5)
            # and both are the derivative of the area, up to the 1D (per row / column) coverage estimate
            assert float(v.grad[i, axis]) == pytest.approx(float(va.grad[i, axis]), rel=0.15, abs=3.0)


def test_sphere_coverage_gradient_matches_finite_differences():
    s = trimesh.creation.icosphere(3, 0.6)
    verts = torch.tensor(s.vertices, dtype=torch.float32)
    faces = torch.tensor(s.faces, dtype=torch.int64)
    cams = spherical_cameras([20.0, 110.0, 250.0], [10.0, -30.0, 60.0], radius=2.6, fov=40.0)
    size = 48

    def total(v):
        return coverage(v, faces, cams, size).sum()

    # Smooth deformations: a random per-vertex direction also works on average, but its finite difference jumps
    # with the step (each vertex's silhouette crossings are piecewise linear with kinks at pixel centres).
    directions = {
        "scale": verts.clone(),
        "stretch_x": verts * torch.tensor([1.0, 0.0, 0.0]),
        "bump": torch.sin(3 * verts[:, [1, 2, 0]]) * 0.5,
    }
    v = verts.clone().requires_grad_(True)
    total(v).backward()
    for name, d in directions.items():
        analytic = float((v.grad * d).sum())
        fd = central_difference(total, verts, d, 1e-3)
        assert analytic == pytest.approx(fd, rel=0.03), name
    # Without the antialiasing pass the coverage has no gradient at all.
    v2 = verts.clone().requires_grad_(True)
    out = render_surface(v2, faces, cams, size, aa=False)
    assert out["opacity"].grad_fn is None or not out["opacity"].requires_grad


def test_colour_gradient_at_an_occlusion_boundary_and_no_blending_inside():
    """A red square (two triangles) in front of a large blue one: the red amount moves with the front square's
    vertices; the diagonal shared by the red triangles is not a silhouette and is not blended."""
    sq = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    front = torch.cat([sq * 0.35 + torch.tensor([0.05, 0.02]), torch.full((4, 1), 0.3)], 1)
    back = torch.cat([sq * 0.9, torch.full((4, 1), -0.3)], 1)
    verts = torch.cat([front, back])
    quad = torch.tensor([[0, 1, 2], [0, 2, 3]])
    faces = torch.cat([quad, quad + 4])
    colours = torch.tensor([[1.0, 0.0, 0.0]] * 4 + [[0.0, 0.0, 1.0]] * 4)
    cams = spherical_cameras([10.0], [5.0], radius=3.0, fov=40.0)
    size = 40

    def red(v):
        from distill3d.mesh.rasterize import interpolate

        clip = world_to_clip(v, cams)
        frags = rasterize(clip, faces, size)
        img = interpolate(colours, frags, faces)
        return antialias(img, frags, clip, faces)[..., 0].sum(), img, frags

    v = verts.clone().requires_grad_(True)
    r, hard, frags = red(v)
    r.backward()
    for i in (0, 2):
        for axis in (0, 1):
            d = torch.zeros_like(verts)
            d[i, axis] = 1.0
            fd = central_difference(lambda x: red(x)[0], verts, d, 2e-3)
            assert float(v.grad[i, axis]) == pytest.approx(fd, rel=0.03, abs=0.3)
    assert v.grad[4:].abs().sum() == 0  # the blue outline separates blue from black: no red to move
    # Only pixels next to the red square's outline change; the interior diagonal is not blended.
    aa = antialias(hard, frags, world_to_clip(verts, cams), faces)
    changed = (aa - hard)[0, ..., 0].abs() > 1e-6  # red channel (the blue square blends with the black background)
    fid = frags.face_id[0]
    red_px = (fid == 0) | (fid == 1)
    near_outline = torch.zeros_like(red_px)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        near_outline |= red_px & ~red_px.roll((dy, dx), (0, 1))
        near_outline |= ~red_px & red_px.roll((dy, dx), (0, 1))
    assert changed.any() and not (changed & ~near_outline).any()
    diagonal = ((fid == 0) & (fid.roll(1, 1) == 1)) | ((fid == 1) & (fid.roll(-1, 1) == 0))
    assert diagonal.any() and not (changed & diagonal & ~near_outline).any()


def test_topology_of_a_closed_mesh():
    s = trimesh.creation.icosphere(1, 1.0)
    faces = torch.tensor(s.faces, dtype=torch.int64)
    t = edge_topology(faces)
    assert t.edges.shape[0] == len(s.edges_unique) and t.manifold.all()
    # face_edges[f, k] joins faces[f, k] and faces[f, k + 1]
    ends = t.edges[t.face_edges]  # (F, 3, 2)
    pairs = torch.stack([faces, faces.roll(-1, 1)], -1).sort(-1).values
    assert torch.equal(ends, pairs)
    for e in range(0, t.edges.shape[0], 7):
        for f in t.edge_faces[e]:
            assert set(t.edges[e].tolist()) <= set(faces[f].tolist())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvdiffrast needs CUDA")
def test_nvdiffrast_visibility_matches_the_torch_rasteriser():
    pytest.importorskip("nvdiffrast")
    from distill3d.mesh.nvdiff import rasterize_nvdiffrast

    s = trimesh.creation.icosphere(3, 0.6)
    verts = torch.tensor(s.vertices, dtype=torch.float32, device="cuda")
    faces = torch.tensor(s.faces, dtype=torch.int64, device="cuda")
    cams = spherical_cameras([20.0, 110.0], [10.0, -30.0], radius=2.6, fov=40.0, device="cuda")
    clip = world_to_clip(verts, cams)
    ours, theirs = rasterize(clip, faces, 64), rasterize_nvdiffrast(clip, faces, 64)
    assert (ours.face_id == theirs.face_id).float().mean() > 0.99
