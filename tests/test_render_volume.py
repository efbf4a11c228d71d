"""Volume renderer against an analytic sphere: silhouette, depth, background, normals, orientation loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill3d.cameras import camera_rays, spherical_cameras
from distill3d.fields.nerf import FieldOutput, RadianceField
from distill3d.optimize.losses import orientation_loss
from distill3d.render.volume import OccupancyCache, ray_box_intersect, render_field

R_SPHERE = 0.5


class SphereField(nn.Module):
    """sigma = s * softplus(-sdf / eps) of a sphere of radius r at the origin: steep, with nonzero gradient inside."""

    bound = 1.0

    def __init__(self, r: float = R_SPHERE, s: float = 20.0, eps: float = 0.002):
        super().__init__()
        self.r, self.s, self.eps = r, s, eps
        self.gain = nn.Parameter(torch.ones(()))  # something to receive gradients

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * self.s * nn.functional.softplus(-(x.norm(dim=-1) - self.r) / self.eps)

    def query(self, x: torch.Tensor, *, normals: bool = False, create_graph: bool = False) -> FieldOutput:
        albedo = torch.tensor([0.8, 0.2, 0.2]).expand(x.shape[0], 3)
        if not normals:
            return FieldOutput(self.density(x), albedo, None)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            sigma = self.density(xg)
            (g,) = torch.autograd.grad(sigma.sum(), xg, create_graph=create_graph)
        return FieldOutput(sigma, albedo, -g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def _analytic(cams, size: int):
    """Disc mask (B, H, W) and front-surface distance along each ray for the sphere seen from cams."""
    o, d = camera_rays(cams, size)
    D = o.norm(dim=-1)
    cos = (-o / D[..., None] * d).sum(-1)
    disc = cos > (1 - (R_SPHERE / D) ** 2).sqrt()
    t = D * cos - (R_SPHERE**2 - D**2 * (1 - cos**2)).clamp_min(0).sqrt()
    return disc, t, o, d


CAMS = dict(azimuth=[0.0, 70.0, 200.0], elevation=[10.0, -20.0, 50.0], radius=[3.0, 2.8, 3.2], fov=[40.0, 38.0, 42.0])


@pytest.mark.parametrize("size", [32, 64])
def test_sphere_silhouette_depth_background(size: int) -> None:
    cams = spherical_cameras(**CAMS)
    with torch.no_grad():
        out = render_field(SphereField(), cams, size, generator=torch.Generator().manual_seed(0))
    disc, t, _, _ = _analytic(cams, size)
    mask = out["opacity"] > 0.5
    iou = (mask & disc).sum() / (mask | disc).sum()
    assert iou > 0.95
    empty = out["opacity"] < 1e-6
    assert empty.sum() > 0.5 * size * size * 3
    torch.testing.assert_close(out["rgb"][empty], torch.ones_like(out["rgb"][empty]), atol=1e-5, rtol=0)  # white
    inner = out["opacity"] > 0.99
    step = 2 * 3**0.5 / 64  # longest interval: box diagonal / n_samples
    err = (out["depth"] - t)[inner].abs()
    assert err.mean() < step and err.max() < 2.5 * step
    assert (out["depth"][empty] == 0).all()
    torch.testing.assert_close(out["rgb"][inner], torch.tensor([0.8, 0.2, 0.2]).expand_as(out["rgb"][inner]),
                               atol=0.02, rtol=0)


def test_background_colour_per_view() -> None:
    cams = spherical_cameras([0.0, 90.0], [0.0, 0.0])
    bg = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        out = render_field(SphereField(), cams, 16, background=bg)
    assert torch.equal(out["rgb"][0, 0, 0], bg[0]) and torch.equal(out["rgb"][1, 0, 0], bg[1])


def test_sphere_normals_outward_and_orientation_loss_zero() -> None:
    cams = spherical_cameras(**CAMS)
    out = render_field(SphereField(), cams, 32, shading="lambertian")
    _, _, o, d = _analytic(cams, 32)
    inner = out["opacity"] > 0.99
    p = o + d * out["depth"][..., None]
    outward = p / p.norm(dim=-1, keepdim=True)
    assert ((out["normal"] * outward).sum(-1)[inner] > 0.99).all()
    # Front surface normals face the camera: DreamFusion's orientation loss vanishes.
    assert orientation_loss(out) < 1e-4  # only the (invisible) back half, weights ~ transmittance ~ 0
    # Flipped normals (pointing inward, away from the camera) are penalised.
    flipped = dict(out, sample_normals=-out["sample_normals"])
    assert orientation_loss(flipped) > 0.3 * inner.float().mean()  # ~ mean cos^2 (1/2) over covered pixels
    # Lambertian shading of the sphere: darker where the normal turns from the light.
    assert out["rgb"][inner].min() < 0.8 * out["rgb"][inner].max()


def test_textureless_shading_gradients_reach_geometry() -> None:
    f = RadianceField()
    cams = spherical_cameras([30.0], [20.0])
    out = render_field(f, cams, 16, shading="textureless")
    assert out["sample_normals"].requires_grad
    out["rgb"].mean().backward()
    assert f.encoding.table.grad.abs().sum() > 0


def test_occupancy_cache_skips_empty_space_without_changing_the_image() -> None:
    cams = spherical_cameras(**CAMS)
    field = SphereField()
    occ = OccupancyCache(bound=1.0, n_samples=64, resolution=32)
    for k in range(8):  # as in an optimisation: refreshed every update_every steps, each time at new jittered points
        occ.update(field, step=k * occ.update_every)
    assert 0.065 < occ.binary.float().mean() < 0.1  # a sphere of radius 0.5 fills 6.5 % of the box, plus its boundary
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    with torch.no_grad():
        full = render_field(field, cams, 32, generator=g())
        fast = render_field(field, cams, 32, generator=g(), occupancy=occ)
    for key in ("opacity", "rgb"):
        diff = (fast[key] - full[key]).abs()
        # the same image but for a few silhouette pixels, whose rays graze a boundary cell holding a sliver of sphere
        # that no jittered point has hit yet (nerfacc's grid on CUDA has the same property)
        assert (diff <= 1e-4).float().mean() > 0.97
        assert diff.mean() < 2e-3
    binary = occ.binary.clone()
    occ.update(field, step=1)  # not a multiple of update_every: no change
    assert torch.equal(occ.binary, binary)


def test_ray_box_intersect() -> None:
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    tn, tf, hit = ray_box_intersect(o, d, 1.0)
    assert hit.tolist() == [True, False, True]
    torch.testing.assert_close(tn[[0, 2]], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(tf[[0, 2]], torch.tensor([4.0, 1.0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nerfacc's OccGridEstimator path needs CUDA")
def test_cuda_packed_path_matches_batched() -> None:
    cams = spherical_cameras(**CAMS, device="cuda")
    field = SphereField().cuda()
    occ = OccupancyCache(bound=1.0, n_samples=128, device="cuda")
    assert occ.use_nerfacc
    for step in range(3):
        occ.update(field, step=step * occ.update_every)
    disc, t, _, _ = _analytic(cams.to("cpu"), 32)
    out = render_field(field, cams, 32, shading="lambertian", occupancy=occ)
    mask = out["opacity"].cpu() > 0.5
    assert (mask & disc).sum() / (mask | disc).sum() > 0.95
    inner = out["opacity"].cpu() > 0.99
    assert (out["depth"].cpu() - t)[inner].abs().mean() < 0.05
    assert orientation_loss(out) < 1e-4
    out["rgb"].mean().backward()
    assert field.gain.grad is not None


def test_empty_occupancy_renders_background_and_backpropagates() -> None:
    f = RadianceField()
    occ = OccupancyCache(bound=1.0, n_samples=64)
    occ.binary.zero_()
    for shading in ("albedo", "lambertian"):
        out = render_field(f, spherical_cameras([0.0], [0.0]), 8, shading=shading, occupancy=occ)
        assert float(out["opacity"].detach().sum()) == 0.0
        torch.testing.assert_close(out["rgb"], torch.ones(1, 8, 8, 3))
        (out["rgb"].mean() + out["opacity"].mean()).backward()
