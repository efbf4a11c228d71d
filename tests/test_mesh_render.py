"""render_mesh: silhouettes against the analytic projected sphere, orientation, texture convention, shading, SSAA."""

import pytest
import torch
import trimesh

from distill3d import shading
from distill3d.cameras import camera_rays, spherical_cameras
from distill3d.mesh.render import render_mesh, sample_texture, vertex_normals
from distill3d.mesh.types import TexturedMesh


def sphere(radius: float = 0.7, subdivisions: int = 4) -> TexturedMesh:
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return TexturedMesh(torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int64))


def analytic_disc(cams, size: int, radius: float) -> torch.Tensor:
    """(B, H, W) bool: pixel rays that hit a sphere of ``radius`` at the origin."""
    o, d = camera_rays(cams, size)
    to_centre = -o / o.norm(dim=-1, keepdim=True)
    cos = (d * to_centre).sum(-1)
    dist = o.norm(dim=-1)
    return cos >= torch.sqrt(1 - (radius / dist) ** 2)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a & b).sum() / (a | b).sum()).item()


def test_sphere_mask_matches_analytic_disc():
    cams = spherical_cameras([0.0, 75.0, 200.0], [0.0, 35.0, -50.0], radius=[2.6, 3.0, 2.4], fov=[40.0, 35.0, 45.0])
    out = render_mesh(sphere(), cams, 64)
    truth = analytic_disc(cams, 64, 0.7)
    for b in range(len(cams)):
        assert iou(out["mask"][b] > 0.5, truth[b]) > 0.97
    assert set(out["mask"].unique().tolist()) == {0.0, 1.0}
    assert out["rgb"].shape == (3, 64, 64, 3) and out["normal"].shape == (3, 64, 64, 3)
    assert (out["rgb"][~truth] == 1.0).float().mean() > 0.99  # white background


def test_ssaa_gives_fractional_coverage_closer_to_analytic_area():
    cams = spherical_cameras([30.0], [20.0], radius=2.6)
    truth = analytic_disc(cams, 128, 0.7).float()
    true_cov = torch.nn.functional.avg_pool2d(truth[None], 4)[0]  # (1, 32, 32) coverage fractions
    hard = render_mesh(sphere(), cams, 32)["mask"]
    soft = render_mesh(sphere(), cams, 32, ssaa=4)
    frac = soft["mask"]
    assert ((frac > 0) & (frac < 1)).any()
    assert (soft["mask"] - true_cov).abs().mean() < (hard - true_cov).abs().mean()
    inner = frac == 1
    assert (soft["depth"][inner] > 1.8).all() and (soft["depth"][inner] < 2.6).all()


def test_depth_normals_and_shading_at_the_centre():
    cams = spherical_cameras([0.0], [0.0], radius=3.0, fov=40.0)
    out = render_mesh(sphere(0.7, 5), cams, 33, mode="textureless", light_dir=torch.tensor([[0.0, 0.0, 1.0]]))
    c = 16  # centre pixel of a 33-pixel image looks straight down the axis at the sphere's front pole
    assert out["depth"][0, c, c].item() == pytest.approx(3.0 - 0.7, abs=2e-3)
    assert torch.allclose(out["normal"][0, c, c], torch.tensor([0.0, 0.0, 1.0]), atol=1e-2)
    assert torch.allclose(out["rgb"][0, c, c], torch.ones(3), atol=1e-3)  # head-on light: full brightness
    # A light from behind leaves only the ambient term.
    dark = render_mesh(sphere(0.7, 5), cams, 33, mode="textureless", light_dir=torch.tensor([[0.0, 0.0, -1.0]]))
    assert torch.allclose(dark["rgb"][0, c, c], torch.full((3,), shading.DEFAULT_AMBIENT), atol=1e-3)
    # Default headlight is used when no light is given and shaded output stays within [0, 1].
    rgb = render_mesh(sphere(), cams, 33)["rgb"]
    assert rgb.min() >= 0 and rgb.max() <= 1


def test_vertex_colours_orientation():
    """Red on +X, blue on -X: seen from the front (+Z), red is on the image's right; from azimuth 90 (on +X),
    all red."""
    m = sphere()
    red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    m.vertex_colors = torch.where(m.vertices[:, :1] > 0, red, blue)
    cams = spherical_cameras([0.0, 90.0], [0.0, 0.0], radius=2.6)
    rgb = render_mesh(m, cams, 32, mode="albedo")["rgb"]
    assert torch.allclose(rgb[0, 16, 24], red) and torch.allclose(rgb[0, 16, 7], blue)
    assert torch.allclose(rgb[1, 16, 16], red)


def test_texture_convention_v_up_row0_top():
    """A quad facing the camera with uv = its xy corners shows the texture upright: texture row 0 at the top."""
    verts = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = (verts[:, :2] + 1) / 2
    tex = torch.zeros(2, 2, 3)
    tex[0, 0] = torch.tensor([1.0, 0, 0])  # top-left red
    tex[0, 1] = torch.tensor([0, 1.0, 0])  # top-right green
    tex[1, 0] = torch.tensor([0, 0, 1.0])  # bottom-left blue
    tex[1, 1] = torch.tensor([1.0, 1, 0])  # bottom-right yellow
    m = TexturedMesh(verts, faces, uv=uv, texture=tex)
    cams = spherical_cameras([0.0], [0.0], radius=4.0, fov=40.0)
    rgb = render_mesh(m, cams, 64, mode="albedo")["rgb"][0]
    # The quad spans about +-0.55 NDC; sample well inside each quadrant where bilinear weights are ~1.
    assert torch.allclose(rgb[14, 14], tex[0, 0], atol=0.05)
    assert torch.allclose(rgb[14, 49], tex[0, 1], atol=0.05)
    assert torch.allclose(rgb[49, 14], tex[1, 0], atol=0.05)
    assert torch.allclose(rgb[49, 49], tex[1, 1], atol=0.05)
    # Texel centres are sampled exactly (align_corners=False).
    assert torch.allclose(sample_texture(tex, torch.tensor([[0.25, 0.75], [0.75, 0.25]])), tex[[0, 1], [0, 1]])


def test_vertex_normals_point_outwards_and_render_is_differentiable_wrt_colours():
    m = sphere(0.7, 2)
    n = vertex_normals(m.vertices, m.faces)
    assert torch.allclose(n, m.vertices / m.vertices.norm(dim=-1, keepdim=True), atol=0.05)
    m.vertex_colors = torch.full_like(m.vertices, 0.5).requires_grad_(True)
    out = render_mesh(m, spherical_cameras([0.0], [0.0], radius=2.6), 16)
    out["rgb"].sum().backward()
    assert m.vertex_colors.grad.abs().sum() > 0
