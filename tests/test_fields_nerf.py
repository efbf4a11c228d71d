"""Hash-grid encoding and radiance field: continuity, gradients, normals, bounds, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill3d.fields.encoding import HashGridConfig, HashGridEncoding
from distill3d.fields.nerf import FieldConfig, RadianceField


def _random_table(enc: HashGridEncoding, scale: float = 1.0) -> None:
    with torch.no_grad():
        enc.table.normal_(0.0, scale)


@pytest.mark.parametrize("kind", ["hash", "dense"])
def test_encoding_is_continuous_across_cells(kind: str) -> None:
    torch.manual_seed(0)
    cfg = HashGridConfig(n_levels=4, log2_hashmap_size=10, base_resolution=4, max_resolution=32, kind=kind)
    enc = HashGridEncoding(cfg)
    if kind == "hash":
        assert 0 < enc.n_dense < cfg.n_levels  # both direct and hashed levels are exercised
    _random_table(enc)
    # A line crossing many cells of every level, finely sampled: trilinear interpolation has no jumps.
    s = torch.linspace(0, 1, 20001)[:, None]
    x = torch.tensor([-0.93, -0.71, -0.88]) * (1 - s) + torch.tensor([0.91, 0.77, 0.6]) * s
    y = enc(x)
    step = (x[1] - x[0]).norm()
    jumps = (y[1:] - y[:-1]).abs().max()
    # Lipschitz bound: |dy/dx| <= max_res * 2 / (2 bound) * 2 * max|table| per unit length (generous).
    assert jumps < step * 32 * 4 * enc.table.abs().max()
    # And it is not constant.
    assert (y.max(0).values - y.min(0).values).min() > 0.1


def test_encoding_matches_trilinear_interpolation_of_dense_grid() -> None:
    cfg = HashGridConfig(n_levels=1, features_per_level=1, log2_hashmap_size=12, base_resolution=4, max_resolution=4)
    enc = HashGridEncoding(cfg)
    # Vertex (i, j, k) holds i + 10 j + 100 k: a linear function, which trilinear interpolation reproduces exactly.
    r = 4
    ijk = torch.stack(torch.meshgrid(*(torch.arange(r + 1.0),) * 3, indexing="ij"), -1).reshape(-1, 3)
    lin = ijk[:, 0] + 10 * ijk[:, 1] + 100 * ijk[:, 2]
    with torch.no_grad():
        enc.table[0, ijk[:, 0].long() + (r + 1) * ijk[:, 1].long() + (r + 1) ** 2 * ijk[:, 2].long()] = lin
    x = torch.rand(100, 3) * 2 - 1
    u = (x + 1) / 2 * r
    torch.testing.assert_close(enc(x)[:, 0], u[:, 0] + 10 * u[:, 1] + 100 * u[:, 2], rtol=1e-5, atol=1e-3)


def test_encoding_gradients_reach_table_and_points() -> None:
    cfg = HashGridConfig(n_levels=3, features_per_level=2, log2_hashmap_size=8, base_resolution=4, max_resolution=16)
    enc = HashGridEncoding(cfg).double()
    _random_table(enc)
    x = (torch.rand(6, 3, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    enc.table.grad = None
    y = enc(x)
    (y ** 2).sum().backward()
    touched = (enc.table.grad != 0).any(0).sum()
    assert 0 < touched <= 6 * 3 * 8  # only the corners of the cells containing x
    # gradcheck w.r.t. the table and the points (double precision, away from cell faces w.p. 1).
    assert torch.autograd.gradcheck(lambda p: enc(p), (x,), eps=1e-7, atol=1e-5)
    tab = enc.table.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: torch.func.functional_call(enc, {"table": t}, (x.detach(),)), (tab,))


def test_field_density_zero_outside_box_and_blob_inside() -> None:
    f = RadianceField()
    x = torch.tensor([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [0.0, -1.01, 0.5], [0.9, 0.9, 0.9]])
    sigma, albedo = f(x)
    assert sigma[0] > 5 and sigma[1] == 0 and sigma[2] == 0 and 0 <= sigma[3] < 0.1
    assert albedo.shape == (4, 3) and ((albedo > 0) & (albedo < 1)).all()
    torch.testing.assert_close(f.density(x), sigma)
    torch.testing.assert_close(f.albedo(x), albedo)


def test_support_radius_zeroes_density_outside_its_ball_only() -> None:
    torch.manual_seed(0)
    boxed = RadianceField()
    _random_table(boxed.encoding, 1.0)  # a field with density everywhere, as a hazy one
    balled = RadianceField(FieldConfig(support_radius=0.9))
    balled.load_state_dict(boxed.state_dict())
    x = torch.rand(4000, 3) * 2 - 1
    inside = x.norm(dim=-1) <= 0.9
    sigma_box, sigma_ball = boxed.density(x), balled.density(x)
    assert (sigma_box[~inside] > 0).all()  # the box alone keeps density in the corners ...
    assert (sigma_ball[~inside] == 0).all()  # ... the ball does not
    torch.testing.assert_close(sigma_ball[inside], sigma_box[inside])
    torch.testing.assert_close(balled.query(x, normals=True).sigma, sigma_ball)  # the normals path agrees
    with pytest.raises(ValueError, match="support_radius must be in"):
        RadianceField(FieldConfig(support_radius=0.0))


def test_field_normals_point_outward_of_blob_and_train() -> None:
    f = RadianceField(FieldConfig(density_activation="trunc_exp"))
    x = torch.randn(64, 3)
    x = 0.3 * x / x.norm(dim=-1, keepdim=True)
    n = f.normals(x)
    assert ((n * x / 0.3).sum(-1) > 0.99).all()
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(64))
    # create_graph: a loss on normals reaches the hash table (geometry learns from shading).
    q = f.query(x, normals=True, create_graph=True)
    q.normals[:, 0].sum().backward()
    assert f.encoding.table.grad is not None and f.encoding.table.grad.abs().sum() > 0
    # Under no_grad normals still come out (eval renders), detached.
    with torch.no_grad():
        q = f.query(x, normals=True)
    assert not q.normals.requires_grad


def test_field_save_load_roundtrip(tmp_path: Path) -> None:
    cfg = FieldConfig(hidden_width=16, blob="linear")
    f = RadianceField(cfg)
    _random_table(f.encoding, 0.1)
    f.save(tmp_path / "nerf")
    g = RadianceField.load(tmp_path / "nerf")
    assert g.cfg == cfg
    x = torch.rand(50, 3) * 2 - 1
    torch.testing.assert_close(g(x)[0], f(x)[0])
    torch.testing.assert_close(g(x)[1], f(x)[1])


@pytest.mark.parametrize("kind", ["nerf", "sdf"])
def test_analytic_spatial_gradient_equals_autograd(kind) -> None:
    """The fields' normals come from the encoding's and MLP's analytic spatial derivatives (no double backward):
    the direction of the gradient autograd takes of the density / SDF, and the same parameter gradients through
    it (autograd's through a double backward: the points require grad, so the torch code runs)."""
    from distill3d.fields.sdf import SDFConfig, SDFField

    torch.manual_seed(0)
    field = RadianceField(FieldConfig(blob_density=5.0)) if kind == "nerf" else SDFField(SDFConfig())
    with torch.no_grad():
        field.encoding.table.normal_(0, 0.1)
    x = (torch.rand(500, 3) * 2 - 1) * 0.9
    q = field.query(x, normals=True, create_graph=True)
    xg = x.clone().requires_grad_(True)
    value = field.density(xg) if kind == "nerf" else field.sdf(xg)
    (grad_ref,) = torch.autograd.grad(value.sum(), xg, create_graph=True)
    n_ref = (-1.0 if kind == "nerf" else 1.0) * grad_ref / grad_ref.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(q.sigma, field.density(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q.normals, n_ref, atol=1e-4, rtol=1e-4)
    w = torch.randn(500, 3)
    params = [p for p in field.parameters() if p.requires_grad]
    ours = torch.autograd.grad((q.normals * w).sum(), params, allow_unused=True)
    ref = torch.autograd.grad((n_ref * w).sum(), params, allow_unused=True)
    for p, a, b in zip(params, ours, ref):  # None: the parameter does not reach the gradient (a bias)
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
