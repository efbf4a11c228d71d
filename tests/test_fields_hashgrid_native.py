"""The fused C++ hash-grid kernels (distill3d.fields.hashgrid_cpu) against the torch code they replace on CPU:
features, spatial derivatives and table gradients (dense and hashed levels, points on cell faces and outside the
box), the fields' normals, a whole distillation step; the torch fallback when forced, when x requires grad and
when the build fails. No timing here (benchmarks/bench_encoding.py)."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from native_build_failure import break_the_build

from distill3d.fields import hashgrid_cpu
from distill3d.fields.encoding import HashGridConfig, HashGridEncoding
from distill3d.fields.nerf import FieldConfig, RadianceField
from distill3d.fields.sdf import SDFConfig, SDFField

HAS_COMPILER = shutil.which("c++") is not None
needs_native = pytest.mark.skipif(not HAS_COMPILER, reason="no C++ compiler: the torch code is the only path")


@pytest.fixture
def use_native(monkeypatch):
    """set(True / False) switches the path for the calls that follow."""
    def set_(native: bool) -> None:
        monkeypatch.setenv("DISTILL3D_NATIVE", "1" if native else "0")
    return set_


def _tol(dtype: torch.dtype) -> dict:
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def _points(enc: HashGridEncoding, n: int, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Random points in and around the box, the box's faces and corners, and points exactly on cell faces of every
    level (coordinates k / N_l in [0, 1] units, where floor() changes cell)."""
    b = enc.cfg.bound
    pts = [(torch.rand(n, 3, generator=generator, dtype=dtype) * 2.4 - 1.2) * b]
    pts.append(torch.tensor([[-b, -b, -b], [b, b, b], [-b, b, 0.0], [b, 0.3, -b]], dtype=dtype))
    for r in enc.resolutions:
        k = torch.randint(0, r + 1, (16, 3), generator=generator).to(dtype)
        on_face = k / r * 2 * b - b
        mixed = torch.rand(16, 3, generator=generator, dtype=dtype) * 2 * b - b
        mixed[:, 1] = on_face[:, 1]  # one coordinate on a face, the others anywhere
        pts += [on_face, mixed]
    pts.append(torch.tensor([[1.5, 0.0, 0.0], [0.0, -1.01, 0.5], [3.0, 3.0, -3.0]], dtype=dtype) * b)  # outside
    return torch.cat(pts)


def _run(enc: HashGridEncoding, x: torch.Tensor, gf: torch.Tensor | None, gj: torch.Tensor | None):
    """features, derivatives, plain features and the table gradient of sum(f * gf) + sum(j * gj)."""
    enc.table.grad = None
    f, j = enc.forward_with_grad(x)
    loss = 0.0
    if gf is not None:
        loss = loss + (f * gf).sum()
    if gj is not None:
        loss = loss + (j * gj).sum()
    loss.backward()
    plain = enc(x)
    return f.detach(), j.detach(), plain.detach(), enc.table.grad.clone()


@needs_native
def test_kernels_build_and_use_torch_thread_count() -> None:
    assert hashgrid_cpu.library() is not None  # built (whatever DISTILL3D_NATIVE says: it only picks the path)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert hashgrid_cpu.kernel_threads() == 1
    finally:
        torch.set_num_threads(old)
    assert hashgrid_cpu.kernel_threads() == old


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind,features", [("hash", 2), ("hash", 1), ("hash", 3), ("dense", 2)])
def test_native_matches_torch(use_native, kind: str, features: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    cfg = HashGridConfig(n_levels=5, features_per_level=features, log2_hashmap_size=10, base_resolution=4,
                         max_resolution=48, bound=1.3, kind=kind)
    enc = HashGridEncoding(cfg).to(dtype)
    if kind == "hash":
        assert 0 < enc.n_dense < cfg.n_levels  # both direct and hashed levels
    with torch.no_grad():
        enc.table.copy_(torch.randn(enc.table.shape, generator=g, dtype=dtype))
    x = _points(enc, 3000, dtype, g)
    n, d = x.shape[0], enc.output_dim
    gf = torch.randn(n, d, generator=g, dtype=dtype)
    gj = torch.randn(n, 3, d, generator=g, dtype=dtype)
    tol = _tol(dtype)
    for grads in ((gf, gj), (gf, None), (None, gj)):
        use_native(True)
        ours = _run(enc, x, *grads)
        use_native(False)
        ref = _run(enc, x, *grads)
        for name, a, b in zip(("features", "derivatives", "forward", "table grad"), ours, ref):
            scale = b.abs().max().clamp_min(1.0)  # derivatives and table sums reach ~100s
            torch.testing.assert_close(a / scale, b / scale, **tol, msg=lambda m: f"{name}: {m}")
    # outside the box the derivatives are 0 (features clamped), on both paths
    outside = ~((x.abs() <= cfg.bound).all(-1))
    assert outside.sum() >= 3 and (ours[1][outside] == 0).all()


@needs_native
def test_native_path_is_taken_and_fallbacks(use_native, monkeypatch) -> None:
    enc = HashGridEncoding(HashGridConfig(n_levels=3, log2_hashmap_size=8, base_resolution=4, max_resolution=16))
    x = torch.rand(50, 3) * 2 - 1
    calls = []
    real = hashgrid_cpu.forward
    monkeypatch.setattr(hashgrid_cpu, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    use_native(True)
    enc(x)
    enc.forward_with_grad(x)
    assert len(calls) == 2
    use_native(False)  # forced torch path
    enc(x)
    enc.forward_with_grad(x)
    assert len(calls) == 2
    use_native(True)
    # points that require grad: the torch code (the kernels give no gradient w.r.t. x)
    xg = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(enc(xg).sum(), xg)
    assert len(calls) == 2 and gx.abs().sum() > 0
    with torch.no_grad():  # ... unless no graph is recorded
        enc(xg)
    assert len(calls) == 3
    # the Function itself refuses points that require grad
    meta = enc._grid_meta()
    with pytest.raises(RuntimeError, match="no gradient w.r.t. the points"):
        hashgrid_cpu.HashGridFunction.apply(enc.table, xg.detach().clamp(0, 1).requires_grad_(True), meta, False)
    # once differentiable: a double backward through the kernels is an error, not a silent zero
    f, j = enc.forward_with_grad(x)
    (gt,) = torch.autograd.grad(j.pow(2).sum(), enc.table, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(gt.pow(2).sum(), enc.table)


@needs_native
def test_backward_deterministic_and_modes_agree() -> None:
    enc = HashGridEncoding(FieldConfig().encoding)
    g = torch.Generator().manual_seed(1)
    x01 = torch.rand(20000, 3, generator=g)
    d = enc.output_dim
    go, gd = torch.randn(20000, d, generator=g), torch.randn(20000, 3, d, generator=g)
    meta, shape = enc._grid_meta(), tuple(enc.table.shape)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = hashgrid_cpu.backward(x01, shape, torch.float32, meta, go, gd, mode=0)
        torch.set_num_threads(2)
        two = hashgrid_cpu.backward(x01, shape, torch.float32, meta, go, gd, mode=0)
        chunks = hashgrid_cpu.backward(x01, shape, torch.float32, meta, go, gd, mode=1)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, two)  # levels split among threads: the same sums in the same order
    torch.testing.assert_close(chunks, one, rtol=1e-5, atol=1e-4)
    assert torch.equal(hashgrid_cpu.backward(x01[:0], shape, torch.float32, meta, go[:0], gd[:0]),
                       torch.zeros(shape))


@needs_native
@pytest.mark.parametrize("kind", ["nerf", "sdf"])
def test_field_normals_and_gradients_agree(use_native, kind: str) -> None:
    torch.manual_seed(0)
    field = RadianceField(FieldConfig(blob_density=5.0)) if kind == "nerf" else SDFField(SDFConfig())
    with torch.no_grad():
        field.encoding.table.normal_(0, 0.1)
    x = (torch.rand(2000, 3) * 2 - 1) * 1.05  # some points outside the box
    w = torch.randn(2000, 3)
    res = []
    for native in (True, False):
        use_native(native)
        field.zero_grad(set_to_none=True)
        out = field.query(x, normals=True, create_graph=True)
        (out.sigma.sum() + out.albedo.sum() + (out.normals * w).sum()).backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in field.parameters()]
        res.append((out.sigma.detach(), out.albedo.detach(), out.normals.detach(), grads))
    (s1, a1, n1, g1), (s2, a2, n2, g2) = res
    torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a1, a2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(n1, n2, rtol=1e-4, atol=1e-4)
    for (name, _), a, b in zip(field.named_parameters(), g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=lambda m: f"{name}: {m}")


@needs_native
def test_distillation_steps_agree(use_native, tmp_path) -> None:
    """A few SDS steps with Lambertian/textureless shading and the orientation loss (normals with create_graph)
    give the same losses and field on both paths."""
    from test_guidance_sds import LinearPrior

    from distill3d.guidance.sds import SDSConfig
    from distill3d.optimize.config import DistillConfig
    from distill3d.optimize.loop import distill
    from distill3d.optimize.scene import volume_scene

    enc = HashGridConfig(n_levels=3, features_per_level=2, log2_hashmap_size=8, base_resolution=4, max_resolution=16)
    cfg = DistillConfig(steps=4, checkpoint_every=100, render_size=8, n_samples=16, albedo_only_fraction=0.0,
                        shading_probs={"textureless": 0.5, "lambertian": 0.5}, lambda_orient=1.0,
                        lambda_opacity=0.1, occupancy_every=2)
    runs = []
    for native in (True, False):
        use_native(native)
        torch.manual_seed(0)
        field = RadianceField(FieldConfig(encoding=enc, hidden_width=8))
        assert 0 < field.encoding.n_dense < 3
        hist = distill([volume_scene(field, cfg)], LinearPrior(), "a red cube", cfg, seed=3,
                       work_dir=tmp_path / str(native), progress=False, guidance=SDSConfig(guidance_scale=10.0))
        runs.append((hist, field.state_dict()))
    (h1, s1), (h2, s2) = runs
    assert h1["loss_total"] == pytest.approx(h2["loss_total"], rel=1e-4, abs=1e-6)
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k], rtol=1e-3, atol=1e-4, msg=lambda m: f"{k}: {m}")


def test_build_failure_falls_back_to_torch_with_one_warning(monkeypatch, tmp_path, caplog) -> None:
    break_the_build(monkeypatch, tmp_path, hashgrid_cpu.NATIVE)
    enc = HashGridEncoding(HashGridConfig(n_levels=3, log2_hashmap_size=8, base_resolution=4, max_resolution=16))
    x = torch.rand(20, 3) * 2 - 1
    with caplog.at_level(logging.WARNING, logger="distill3d.native_build"):
        f1 = enc(x)
        f2, _ = enc.forward_with_grad(x)
    assert not hashgrid_cpu.available()
    warnings = [r for r in caplog.records
                if r.name == "distill3d.native_build" and "hash-grid" in r.getMessage()]
    assert len(warnings) == 1 and "hash-grid kernels unavailable, using the torch code" in warnings[0].getMessage()
    assert "no-such-compiler" in warnings[0].getMessage()
    monkeypatch.setenv("DISTILL3D_NATIVE", "0")
    torch.testing.assert_close(f1, enc(x))
    torch.testing.assert_close(f2, enc.forward_with_grad(x)[0])


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vectorised_kernels_equal_the_scalar_ones_to_the_bit(dtype: torch.dtype) -> None:
    """Two features on a contiguous table take the vectorised kernels; the same table strided, and the backward's
    mode 1 on one thread (one private table: the scalar level loop in point order), take the scalar ones."""
    enc = HashGridEncoding(FieldConfig().encoding).to(dtype)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        enc.table.copy_(torch.randn(enc.table.shape, generator=g, dtype=dtype) * 0.1)
    x01 = torch.rand(5000, 3, generator=g, dtype=dtype)
    meta, table = enc._grid_meta(), enc.table.detach()
    strided = table.t().contiguous().t()
    assert table.stride(1) == 1 and strided.stride(1) != 1
    for with_grad in (True, False):
        for a, b in zip(hashgrid_cpu.forward(x01, table, meta, with_grad),
                        hashgrid_cpu.forward(x01, strided, meta, with_grad)):
            assert (a is None and b is None) or torch.equal(a, b)
    d = enc.output_dim
    go, gd = torch.randn(5000, d, generator=g, dtype=dtype), torch.randn(5000, 3, d, generator=g, dtype=dtype)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for grads in ((go, gd), (go, None), (None, gd)):
            vec = hashgrid_cpu.backward(x01, tuple(table.shape), dtype, meta, *grads, mode=0)
            scalar = hashgrid_cpu.backward(x01, tuple(table.shape), dtype, meta, *grads, mode=1)
            assert torch.equal(vec, scalar) and vec.abs().sum() > 0
    finally:
        torch.set_num_threads(old)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factorised_derivative_gradient_equals_the_dense_product_to_the_bit(dtype: torch.dtype) -> None:
    """grad_dout_factors (gc, gv) stands for grad_dout = gc (x) gv (the rank-1 gradient a head's normals give): the
    same table gradient to the bit as the dense (N, 3, D) product, in the vectorised kernel (mode 0) and the scalar
    one (mode 1 on one thread), with and without the features' gradient; the wrong shapes are refused."""
    enc = HashGridEncoding(FieldConfig().encoding).to(dtype)
    g = torch.Generator().manual_seed(4)
    x01 = torch.rand(3000, 3, generator=g, dtype=dtype)
    meta, shape, d = enc._grid_meta(), tuple(enc.table.shape), enc.output_dim
    go = torch.randn(3000, d, generator=g, dtype=dtype)
    gc, gv = torch.randn(3000, 3, generator=g, dtype=dtype), torch.randn(3000, d, generator=g, dtype=dtype)
    dense = gc[:, :, None] * gv[:, None, :]
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for mode in (0, 1):
            for feats_grad in (go, None):
                want = hashgrid_cpu.backward(x01, shape, dtype, meta, feats_grad, dense, mode=mode)
                got = hashgrid_cpu.backward(x01, shape, dtype, meta, feats_grad, None, mode=mode,
                                            grad_dout_factors=(gc, gv))
                assert torch.equal(got, want) and got.abs().sum() > 0
    finally:
        torch.set_num_threads(old)
    with pytest.raises(ValueError, match="gc"):
        hashgrid_cpu.backward(x01, shape, dtype, meta, go, None, grad_dout_factors=(gc[:, :2], gv))


@needs_native
def test_kernels_stay_inside_the_table_for_any_input() -> None:
    """The kernels index without bounds checks: points outside [0, 1], infinite or NaN still address cells of
    their level (NaN gives NaN features), and a table too small for the levels is refused before any call."""
    enc = HashGridEncoding(HashGridConfig(n_levels=4, log2_hashmap_size=10, base_resolution=4, max_resolution=32))
    meta, table = enc._grid_meta(), enc.table.detach()
    x01 = torch.tensor([[float("inf"), float("nan"), -5.0], [7.0, 1e30, -1e30], [0.5, 0.5, 0.5]])
    f, _ = hashgrid_cpu.forward(x01, table, meta, True)
    assert f[0].isnan().all() and f[2].isfinite().all()
    g = hashgrid_cpu.backward(x01[1:], tuple(table.shape), table.dtype, meta, torch.ones(2, enc.output_dim), None)
    assert g.shape == table.shape
    with pytest.raises(ValueError, match="M >="):
        hashgrid_cpu.forward(x01, table[:, :100], meta, False)


@needs_native
def test_the_native_contraction_equals_torch_and_its_gradients_check(use_native) -> None:
    """jac (N, 3, D) . v (N, D) -> (N, 3) in one native pass: the broadcast multiply-sum's values and gradients
    (float64 gradcheck), and the fields' normals through it equal the torch path's."""
    from distill3d.fields.jacobian import SpatialJacobian

    g = torch.Generator().manual_seed(0)
    jac = torch.randn(50, 3, 16, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(50, 16, generator=g, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(hashgrid_cpu.ContractFunction.apply(jac, v), (jac * v.unsqueeze(1)).sum(-1))
    assert torch.autograd.gradcheck(hashgrid_cpu.ContractFunction.apply, (jac, v))
    scale = torch.rand(50, generator=g, dtype=torch.float64)
    torch.testing.assert_close(SpatialJacobian(jac, scale).contract(v), (SpatialJacobian(jac, scale).dense() *
                                                                        v.unsqueeze(1)).sum(-1))
    use_native(True)
    torch.manual_seed(0)
    field = RadianceField(FieldConfig(blob_density=5.0))
    with torch.no_grad():
        field.encoding.table.normal_(0.0, 0.05)
    x = (torch.rand(300, 3, generator=g) * 2 - 1) * 0.8
    native = field.query(x, normals=True, create_graph=True)
    (native.normals.sum() + native.sigma.sum()).backward()
    grad_native = field.encoding.table.grad.clone()
    field.zero_grad()
    use_native(False)
    plain = field.query(x, normals=True, create_graph=True)
    (plain.normals.sum() + plain.sigma.sum()).backward()
    torch.testing.assert_close(native.normals, plain.normals, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_native, field.encoding.table.grad, rtol=1e-4, atol=1e-5)  # float32 sums
