"""The fused C++ MLP head (distill3d.fields.mlp_head_cpu) against the torch code it replaces on CPU: outputs, the
spatial gradient of output 0 and every gradient (float64 gradcheck; the default field's float32 sizes, which get
their own compiled loops), the fields' path choice, determinism, and the torch fallback when the build fails. No
timing here (benchmarks/bench_encoding.py, its head rows)."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from native_build_failure import break_the_build
from torch import nn

from distill3d.fields import jacobian, mlp_head_cpu
from distill3d.fields.jacobian import SpatialJacobian, mlp_forward, mlp_with_input_grad
from distill3d.fields.nerf import FieldConfig, RadianceField

needs_native = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler: the torch code only")


def _torch_head(f, jac, w1, b1, w2, b2):
    """The reference: the MLP and d h_0 / d x contracted with jac, in plain torch ops."""
    z = f @ w1.T + b1
    h = torch.relu(z) @ w2.T + b2
    v = (w2[0] * (z > 0)) @ w1
    return h, (jac * v[:, None, :]).sum(-1)


def _inputs(n: int, d: int, h: int, o: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(n, d), (n, 3, d), (h, d), (h,), (o, h), (o,)]
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_(True) for s in shapes]


@needs_native
def test_fused_head_gradients_check_in_float64() -> None:
    f, jac, w1, b1, w2, b2 = _inputs(40, 6, 5, 4, torch.float64)
    ours = mlp_head_cpu.MLPHeadFunction.apply(f, jac, w1, b1, w2, b2)
    for a, b in zip(ours, _torch_head(f, jac, w1, b1, w2, b2)):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(mlp_head_cpu.MLPHeadFunction.apply, (f, jac, w1, b1, w2, b2))
    # only the gradient output given (the other None), and no jac at all
    assert torch.autograd.gradcheck(lambda *a: mlp_head_cpu.MLPHeadFunction.apply(*a)[1], (f, jac, w1, b1, w2, b2))
    assert torch.autograd.gradcheck(lambda f, w1, b1, w2, b2: mlp_head_cpu.MLPHeadFunction.apply(
        f, None, w1, b1, w2, b2), (f, w1, b1, w2, b2))


@needs_native
@pytest.mark.parametrize("sizes", [(16, 32, 4), (12, 32, 4), (24, 32, 4), (16, 64, 7)])
def test_fused_head_matches_torch_in_float32(sizes) -> None:
    """The default fields' sizes (16 / 12, 32, 4: compile-time loops) and others (the generic kernel)."""
    d, h, o = sizes
    a_in = _inputs(5000, d, h, o, torch.float32, seed=1)
    b_in = [t.detach().clone().requires_grad_(True) for t in a_in]
    g = torch.Generator().manual_seed(2)
    gh, gc = torch.randn(5000, o, generator=g), torch.randn(5000, 3, generator=g)
    ha, ca = mlp_head_cpu.MLPHeadFunction.apply(*a_in)
    hb, cb = _torch_head(*b_in)
    torch.testing.assert_close(ha, hb, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ca, cb, rtol=1e-4, atol=1e-3)
    torch.autograd.backward([ha, ca], [gh, gc])
    torch.autograd.backward([hb, cb], [gh, gc])
    for name, a, b in zip(["feats", "jac", "W1", "b1", "W2", "b2"], a_in, b_in):
        scale = b.grad.abs().max().clamp_min(1.0)  # weight gradients are sums over 5000 points
        torch.testing.assert_close(a.grad / scale, b.grad / scale, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


@needs_native
def test_weight_gradients_are_deterministic() -> None:
    f, jac, w1, b1, w2, b2 = _inputs(20000, 16, 32, 4, torch.float32, seed=3)
    grads = []
    for _ in range(2):
        h, c = mlp_head_cpu.MLPHeadFunction.apply(f, jac, w1, b1, w2, b2)
        grads.append(torch.autograd.grad((h.sum() + c.square().sum()), (w1, b1, w2, b2)))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@needs_native
def test_the_head_takes_the_fused_kernel_only_where_it_applies(monkeypatch) -> None:
    """A field's MLP on its encoding (the SDF's eikonal term and the jacobian helpers use the head alone)."""
    calls = []
    real = mlp_head_cpu.MLPHeadFunction.apply
    monkeypatch.setattr(mlp_head_cpu.MLPHeadFunction, "apply", lambda *a: calls.append(1) or real(*a))
    monkeypatch.delenv("DISTILL3D_NATIVE", raising=False)
    torch.manual_seed(0)
    field = RadianceField(FieldConfig(blob_density=5.0))
    x = torch.rand(300, 3) * 2 - 1
    h, c = mlp_with_input_grad(field.mlp, *field.encoding.forward_with_jacobian(x))
    mlp_forward(field.mlp, field.encoding(x))
    assert len(calls) == 2
    monkeypatch.setenv("DISTILL3D_NATIVE", "0")
    h_ref, c_ref = mlp_with_input_grad(field.mlp, *field.encoding.forward_with_jacobian(x))
    assert len(calls) == 2
    torch.testing.assert_close(h, h_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c, c_ref, rtol=1e-4, atol=1e-4)
    monkeypatch.delenv("DISTILL3D_NATIVE")
    # two hidden layers, a bias-free layer, a too-wide layer: the torch code, same values
    f = torch.randn(50, 8)
    jac = SpatialJacobian(torch.randn(50, 3, 8), torch.rand(50))
    for mlp in (nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 4)),
                nn.Sequential(nn.Linear(8, 6, bias=False), nn.ReLU(), nn.Linear(6, 4)),
                nn.Sequential(nn.Linear(8, mlp_head_cpu.MAX_HEAD_WIDTH + 1), nn.ReLU(),
                              nn.Linear(mlp_head_cpu.MAX_HEAD_WIDTH + 1, 4))):
        h, g = mlp_with_input_grad(mlp, f, jac)
        torch.testing.assert_close(mlp_forward(mlp, f), mlp(f))
        assert g.shape == (50, 3) and h.shape == (50, 4)
    assert len(calls) == 2
    # the fused head on a 3-layer MLP equals the torch reverse pass (the scale applied after the contraction)
    mlp = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    h1, g1 = mlp_with_input_grad(mlp, f, jac)
    assert len(calls) == 3
    monkeypatch.setattr(jacobian, "fused_head_applies", lambda *a: False)
    h2, g2 = mlp_with_input_grad(mlp, f, jac)
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)


def test_build_failure_falls_back_to_torch_with_one_warning(monkeypatch, tmp_path, caplog) -> None:
    break_the_build(monkeypatch, tmp_path, mlp_head_cpu.NATIVE)
    mlp = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    f, jac = torch.randn(30, 8), torch.randn(30, 3, 8)
    with caplog.at_level(logging.WARNING, logger="distill3d.native_build"):
        h, g = mlp_with_input_grad(mlp, f, jac)
        mlp_forward(mlp, f)
    assert not mlp_head_cpu.available()
    warnings = [r for r in caplog.records if r.name == "distill3d.native_build" and "MLP-head" in r.getMessage()]
    assert len(warnings) == 1 and "MLP-head kernels unavailable, using the torch code" in warnings[0].getMessage()
    torch.testing.assert_close(h, mlp(f))
    v = (mlp[2].weight[0] * (mlp[0](f) > 0)) @ mlp[0].weight
    torch.testing.assert_close(g, (jac * v[:, None, :]).sum(-1))
