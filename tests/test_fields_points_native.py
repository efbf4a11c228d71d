"""The fields' per-point constants in one native pass (distill3d/fields/points_cpu.py) against the torch code they
replace: the encoding's unit-cube coordinates and derivative factor to the bit, RadianceField's blob bias, its
gradient and the support mask (every blob, with and without the support ball, points outside the box, on its faces,
at the origin and NaN), and whole queries with the kernels on and off. No timing here."""

from __future__ import annotations

import pytest
import torch

from distill3d.fields import points_cpu
from distill3d.fields.encoding import HashGridConfig
from distill3d.fields.nerf import FieldConfig, RadianceField

pytestmark = pytest.mark.skipif(not points_cpu.NATIVE.available(), reason="no C++ compiler: torch path only")


def _points(n: int = 5000, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    x = torch.rand(n, 3, generator=torch.Generator().manual_seed(0), dtype=dtype) * 2.4 - 1.2
    x[:5] = torch.tensor([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [-1.0, 0.3, 1.0000001],
                          [0.5, float("nan"), 0.1]], dtype=dtype)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unit_cube_equals_the_encodings_normalisation_to_the_bit(dtype) -> None:
    enc = RadianceField(FieldConfig()).encoding
    x = _points(dtype=dtype)
    x01, factor = points_cpu.unit_cube(x, enc.cfg.bound, True)
    ref, inside, scale = enc._normalise(x)
    assert torch.equal(x01[~x01.isnan()], ref[~ref.isnan()]) and torch.equal(x01.isnan(), ref.isnan())
    assert torch.equal(factor, inside.to(dtype) * scale)
    assert 0 < int(inside.sum()) < x.shape[0] and x01.is_contiguous()
    assert points_cpu.unit_cube(x, enc.cfg.bound, False)[1] is None


@pytest.mark.parametrize("cfg", [FieldConfig(blob_density=5.0), FieldConfig(blob="linear", support_radius=0.8),
                                 FieldConfig(blob="none", density_shift=-1.0),
                                 FieldConfig(encoding=HashGridConfig(bound=0.7))])
def test_density_constants_match_the_torch_code(cfg) -> None:
    field = RadianceField(cfg)
    c = field.cfg
    x = _points()[5:]  # no NaN: the torch code's norm and exp give NaN there too, compared above
    bias, grad, mask = points_cpu.density_constants(x, c.blob, c.blob_density, c.blob_radius, c.density_shift,
                                                     c.bound, c.support_radius, True)
    ref_bias, ref_grad = field.density_bias_and_grad(x)
    torch.testing.assert_close(bias, ref_bias, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    ref_mask = field._support(x)
    assert torch.equal(mask, ref_mask) and 0 < int(mask.sum()) < x.shape[0]
    assert points_cpu.density_constants(x, c.blob, c.blob_density, c.blob_radius, c.density_shift, c.bound,
                                        c.support_radius, False)[1] is None


def test_queries_take_the_kernels_and_match_the_torch_path(monkeypatch) -> None:
    """A query with normals and one without, values and parameter gradients, kernels on and off; points that
    require grad take the torch code (autograd through the blob)."""
    field = RadianceField(FieldConfig(blob_density=5.0, support_radius=0.9))
    x = _points()[5:]
    calls = []
    real = points_cpu.density_constants
    monkeypatch.setattr(points_cpu, "density_constants", lambda *a: calls.append(1) or real(*a))

    def run():
        field.zero_grad()
        q, a = field.query(x, normals=True, create_graph=True), field.query(x)
        (q.sigma.sum() + q.normals.sum() + a.albedo.sum()).backward()
        return [q.sigma, q.normals, a.albedo], [p.grad.clone() for p in field.parameters()]

    outs, grads = run()
    assert len(calls) == 2
    monkeypatch.setattr(points_cpu, "applies", lambda x: False)
    ref_outs, ref_grads = run()
    assert len(calls) == 2
    for a, b in zip(outs + grads, ref_outs + ref_grads):
        s = b.abs().max().clamp_min(1.0)
        torch.testing.assert_close(a.detach() / s, b.detach() / s, rtol=1e-4, atol=1e-5)
    monkeypatch.undo()
    assert not points_cpu.applies(x.clone().requires_grad_(True)) and points_cpu.applies(x)
