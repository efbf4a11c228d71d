"""The CPU volume renderer's fused kernels (render/volume_cpu.py): the sampler to the bit against the torch code,
shading + compositing against nerfacc's path and autograd, a whole render's gradients, the build-failure fallback."""

from __future__ import annotations

import logging

import pytest
import torch

from distill3d.cameras import camera_rays, spherical_cameras
from distill3d.fields.nerf import RadianceField
from distill3d.fields.sdf import SDFField
from distill3d.optimize.losses import opacity_loss, orientation_loss
from distill3d.render import volume_cpu
from distill3d.render.volume import OccupancyCache, dense_samples, render_field
from native_build_failure import break_the_build

pytestmark = pytest.mark.skipif(not volume_cpu.NATIVE.available(), reason="no C++ compiler: torch path only")


def _packed(counts: list[int], dtype=torch.float64, seed: int = 0):
    """Random packed samples of len(counts) rays (some empty), in order along each ray."""
    g = torch.Generator().manual_seed(seed)
    m, r = sum(counts), len(counts)
    offsets = torch.tensor([0] + counts).cumsum(0)
    t_starts = torch.cat([torch.sort(torch.rand(c, generator=g, dtype=dtype) * 2)[0] for c in counts])
    t_ends = t_starts + 0.05 + 0.1 * torch.rand(m, generator=g, dtype=dtype)
    t_mid = (t_starts + t_ends) / 2
    sigma = (torch.rand(m, generator=g, dtype=dtype) * 8).requires_grad_(True)
    albedo = torch.rand(m, 3, generator=g, dtype=dtype).requires_grad_(True)
    normals = torch.nn.functional.normalize(torch.randn(m, 3, generator=g, dtype=dtype), dim=-1).requires_grad_(True)
    light = torch.nn.functional.normalize(torch.randn(r, 3, generator=g, dtype=dtype), dim=-1)
    return sigma, albedo, normals, light, offsets, t_starts, t_ends, t_mid


@pytest.mark.parametrize("stratified", [True, False])
def test_sampler_keeps_the_torch_codes_samples_to_the_bit(stratified: bool) -> None:
    """Rays from outside, inside and missing the box, some along an axis; a grid with holes; with and without it."""
    torch.manual_seed(0)
    cams = spherical_cameras([0.0, 33.0, 90.0, 250.0], [0.0, 20.0, -35.0, 89.0], [2.5, 0.5, 5.0, 2.2],
                             [45.0, 60.0, 70.0, 50.0])
    o, d = camera_rays(cams, 16)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    occ = OccupancyCache(1.0, 48, resolution=8)
    occ.binary.copy_(torch.rand(8, 8, 8) > 0.4)
    u = torch.rand(o.shape[0], 48) if stratified else None
    for grid in (None, occ):
        t0, t1, tm, x, valid = dense_samples(o, d, 1.0, 48, u, grid)
        smp = volume_cpu.sample_rays(o, d, 1.0, 48, u, None if grid is None else grid.binary)
        assert 0 < int(valid.sum()) < valid.numel()
        sel = valid.reshape(-1).nonzero().squeeze(-1)
        assert torch.equal(smp.ray_id, sel // 48)
        assert torch.equal(smp.offsets[1:], valid.sum(1).cumsum(0))
        for ours, ref in ((smp.x, x), (smp.t_starts, t0), (smp.t_ends, t1), (smp.t_mid, tm)):
            assert torch.equal(ours, ref.reshape(-1, *ref.shape[2:])[sel])


@pytest.mark.parametrize("shading", ["albedo", "lambertian", "textureless"])
def test_gradients_of_every_output_match_finite_differences(shading: str) -> None:
    sigma, albedo, normals, light, offsets, t0, t1, tm = _packed([3, 0, 5, 1, 4])

    def f(sigma, albedo, normals):
        return volume_cpu.CompositeFunction.apply(sigma, albedo, normals, light, offsets, t0, t1, tm, shading, 0.3)

    assert torch.autograd.gradcheck(f, (sigma, albedo, normals))


def _reference(sigma, albedo, normals, light, offsets, t0, t1, tm, shading, ambient):
    """The same quantities from nerfacc's batched weights (the packed samples padded to (R, S) with empty intervals:
    its packed form needs CUDA), its packed accumulation and shading.py, by autograd."""
    import nerfacc

    from distill3d.render.volume import _shade

    r, m = offsets.shape[0] - 1, sigma.shape[0]
    counts = offsets.diff()
    ray_id = torch.repeat_interleave(torch.arange(r), counts)
    flat = ray_id * int(counts.max()) + torch.arange(m) - offsets[ray_id]
    dense = lambda v: torch.zeros(r * int(counts.max()), dtype=v.dtype).index_put((flat,), v).view(r, -1)  # noqa
    w, _, _ = nerfacc.render_weight_from_density(dense(t0), dense(t1), dense(sigma))
    w = w.reshape(-1)[flat]
    col = _shade(albedo, normals, light[ray_id], shading, ambient)
    acc = lambda v: nerfacc.accumulate_along_rays(w, v, ray_indices=ray_id, n_rays=r)  # noqa: E731
    return w, acc(col), acc(None)[:, 0], acc(tm[:, None])[:, 0], acc(normals)


@pytest.mark.parametrize("shading", ["albedo", "lambertian", "textureless"])
def test_float32_values_and_gradients_match_nerfacc(shading: str) -> None:
    inputs = _packed([40, 0, 64, 7, 1] * 20, dtype=torch.float32, seed=1)
    ours = volume_cpu.CompositeFunction.apply(*inputs, shading, 0.4)
    ref = _reference(*inputs, shading, 0.4)
    g = torch.Generator().manual_seed(2)
    weights = [torch.randn(t.shape, generator=g) for t in ref]
    grads = []
    for outs in (ours, ref):
        grads.append(torch.autograd.grad(sum((o * wt).sum() for o, wt in zip(outs, weights)), inputs[:3],
                                       allow_unused=True, materialize_grads=True))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shading", ["albedo", "lambertian", "textureless"])
@pytest.mark.parametrize("field_type", [RadianceField, SDFField])
def test_render_field_takes_the_kernels_and_matches_the_torch_path(shading: str, field_type, monkeypatch) -> None:
    """A whole render + backward of a field with occupancy skipping: the same images and parameter gradients."""
    torch.manual_seed(0)
    field = field_type()
    cams = spherical_cameras([20.0, 140.0], [15.0, -10.0], [2.5, 2.6], [45.0, 45.0])
    occ = OccupancyCache(field.bound, 64)
    occ.update(field, 0, generator=torch.Generator().manual_seed(0))
    calls = []
    real = volume_cpu.CompositeFunction.apply
    monkeypatch.setattr(volume_cpu.CompositeFunction, "apply", lambda *a: calls.append(1) or real(*a))

    def run():
        field.zero_grad()
        out = render_field(field, cams, 24, shading=shading, occupancy=occ, with_normals=True,
                           generator=torch.Generator().manual_seed(3))
        target = torch.rand(out["rgb"].shape, generator=torch.Generator().manual_seed(4))
        loss = ((out["rgb"] - target) ** 2).mean() + orientation_loss(out) + opacity_loss(out["opacity"])
        loss = loss + out["depth"].mean() * 0.1 + out["normal"].square().mean()
        loss.backward()
        return {k: v.detach().clone() for k, v in out.items() if isinstance(v, torch.Tensor)}, \
            [p.grad.clone() for p in field.parameters()]

    out, grads = run()
    assert calls, "the CPU renderer did not take the fused kernel"
    monkeypatch.setattr(volume_cpu, "applies", lambda *a: False)
    calls.clear()
    ref_out, ref_grads = run()
    assert not calls
    # the orientation loss's directions: per ray and offsets here (OrientationFunction), per sample there
    offsets = out.pop("sample_offsets")
    ray_id = torch.repeat_interleave(torch.arange(offsets.shape[0] - 1), offsets.diff())
    torch.testing.assert_close(out.pop("ray_dirs")[ray_id], ref_out.pop("sample_dirs"))
    assert out.keys() == ref_out.keys()
    for k in out:
        torch.testing.assert_close(out[k], ref_out[k], rtol=1e-4, atol=1e-5, msg=k)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_orientation_per_ray_equals_the_gathered_torch_code_and_gradchecks() -> None:
    """OrientationFunction (rays' directions through the offsets) against the torch code on each sample's gathered
    direction: the same loss and normals' gradient (float64 gradcheck; empty rays included), weights constant."""
    _, _, normals, _, offsets, _, _, _ = _packed([3, 0, 5, 1, 4], seed=2)
    g = torch.Generator().manual_seed(3)
    r = offsets.shape[0] - 1
    weights = torch.rand(normals.shape[0], generator=g, dtype=torch.float64)
    dirs = torch.nn.functional.normalize(torch.randn(r, 3, generator=g, dtype=torch.float64), dim=-1)
    ray_id = torch.repeat_interleave(torch.arange(r), offsets.diff())
    packed = {"sample_weights": weights, "sample_normals": normals, "sample_offsets": offsets, "ray_dirs": dirs,
              "n_rays": r}
    gathered = {"sample_weights": weights, "sample_normals": normals, "sample_dirs": dirs[ray_id], "n_rays": r}
    ours, ref = orientation_loss(packed), orientation_loss(gathered)
    assert ref > 0
    torch.testing.assert_close(ours, ref)
    (g1,) = torch.autograd.grad(ours, normals)
    (g2,) = torch.autograd.grad(ref, normals)
    torch.testing.assert_close(g1, g2)
    assert torch.autograd.gradcheck(lambda n: volume_cpu.OrientationFunction.apply(n, weights, dirs, offsets),
                                    (normals,))


def test_build_failure_falls_back_to_nerfacc_with_one_warning(monkeypatch, tmp_path, caplog) -> None:
    break_the_build(monkeypatch, tmp_path, volume_cpu.NATIVE)
    field = RadianceField()
    cams = spherical_cameras([0.0], [10.0], [2.5], [45.0])
    with caplog.at_level(logging.WARNING, logger="distill3d.native_build"):
        for _ in range(2):
            out = render_field(field, cams, 8, shading="lambertian")
    assert out["rgb"].shape == (1, 8, 8, 3) and torch.isfinite(out["rgb"]).all()
    warnings = [r for r in caplog.records if "volume-rendering" in r.getMessage()]
    assert len(warnings) == 1
    assert "volume-rendering kernels unavailable, using the torch code" in warnings[0].getMessage()
