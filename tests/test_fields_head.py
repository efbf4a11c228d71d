"""The fields' head and tail (distill3d.fields.head) fused in C++ (``mlp_head_cpu.FieldHeadFunction``) against its
torch code: every activation, with and without normals and each optional constant, float64 gradcheck, the default
fields' float32 sizes through whole field queries (values and parameter gradients), and the torch code where the
constants carry gradients (x requires grad: autograd through the points). No timing here."""

from __future__ import annotations

import shutil

import pytest
import torch

from distill3d.fields import head, jacobian, mlp_head_cpu
from distill3d.fields.head import FieldTail, field_head
from distill3d.fields.jacobian import SpatialJacobian
from distill3d.fields.nerf import FieldConfig, RadianceField
from distill3d.fields.sdf import SDFField

needs_native = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler: the torch code only")


def _mlp(d: int, h: int, o: int, dtype: torch.dtype, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, o)).to(dtype)


def _case(n: int, d: int, dtype: torch.dtype, seed: int, normals: bool, full: bool):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=g, dtype=dtype)
    jac = SpatialJacobian(torch.randn(n, 3, d, generator=g, dtype=dtype),
                          torch.rand(n, generator=g, dtype=dtype) + 0.5 if full else None) if normals else None
    bias = torch.randn(n, generator=g, dtype=dtype)
    bias_grad = torch.randn(n, 3, generator=g, dtype=dtype) if normals and full else None
    mask = (torch.rand(n, generator=g) > 0.3).to(dtype) if full else None
    return feats, jac, bias, bias_grad, mask


def _run(mlp, feats, jac, tail, fused: bool, monkeypatch):
    with monkeypatch.context() as m:
        if not fused:
            m.setattr(jacobian, "fused_head_applies", lambda *a: False)
        return field_head(mlp, feats, jac, tail)


@needs_native
@pytest.mark.parametrize("activation,sign", [("softplus", -1.0), ("trunc_exp", -1.0), ("none", 1.0)])
@pytest.mark.parametrize("normals,full", [(True, True), (True, False), (False, True)])
def test_fused_field_head_matches_the_torch_code_and_gradchecks(activation, sign, normals, full, monkeypatch):
    mlp = _mlp(6, 5, 4, torch.float64, seed=1)
    feats, jac, bias, bias_grad, mask = _case(40, 6, torch.float64, 2, normals, full)
    tail = FieldTail(activation, sign, bias, bias_grad, mask)
    ours = _run(mlp, feats, jac, tail, True, monkeypatch)
    ref = _run(mlp, feats, jac, tail, False, monkeypatch)
    for a, b in zip(ours, ref):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    params = [feats.requires_grad_(True)] + ([jac.raw.requires_grad_(True)] if normals else []) + list(mlp.parameters())

    def fn(*args):
        f, rest = args[0], args[1:]
        j = SpatialJacobian(rest[0], jac.scale) if normals else None
        w = rest[1:] if normals else rest
        out = mlp_head_cpu.FieldHeadFunction.apply(f, None if j is None else j.raw, *w, None if j is None else j.scale,
                                                   bias, bias_grad, mask, activation, sign)
        return out

    assert torch.autograd.gradcheck(fn, tuple(params))
    # one output's gradient alone (the others None)
    assert torch.autograd.gradcheck(lambda *a: fn(*a)[-1], tuple(params))


def _query_grads(field, x, fused: bool, monkeypatch):
    field.zero_grad()
    with monkeypatch.context() as m:
        if not fused:
            m.setattr(jacobian, "fused_head_applies", lambda *a: False)
        q = field.query(x, normals=True, create_graph=True)
        a = field.query(x)
    g = torch.Generator().manual_seed(5)
    outs = (q.sigma, q.albedo, q.normals, a.sigma, a.albedo)
    sum((t * torch.randn(t.shape, generator=g)).sum() for t in outs).backward()
    return [t.detach() for t in outs], [p.grad.clone() for p in field.parameters() if p.grad is not None]


@needs_native
@pytest.mark.parametrize("make", [
    lambda: RadianceField(FieldConfig(blob_density=5.0)),
    lambda: RadianceField(FieldConfig(density_activation="trunc_exp", support_radius=0.8)),
    lambda: SDFField()])
def test_fields_take_the_fused_tail_with_the_torch_codes_values_and_gradients(make, monkeypatch):
    """The default fields' float32 sizes (compile-time loops) through a whole query, points partly outside the
    box and the support ball."""
    field = make()
    x = (torch.rand(3000, 3, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1)
    calls = []
    real = mlp_head_cpu.FieldHeadFunction.apply
    monkeypatch.setattr(mlp_head_cpu.FieldHeadFunction, "apply", lambda *a: calls.append(1) or real(*a))
    outs, grads = _query_grads(field, x, True, monkeypatch)
    assert len(calls) == 2
    ref_outs, ref_grads = _query_grads(field, x, False, monkeypatch)
    assert len(calls) == 2
    for a, b in zip(outs, ref_outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert len(grads) == len(ref_grads)
    for a, b in zip(grads, ref_grads):
        s = b.abs().max().clamp_min(1.0)  # sums over 3000 points
        torch.testing.assert_close(a / s, b / s, rtol=1e-4, atol=1e-5)


@needs_native
def test_points_that_require_grad_take_the_torch_code(monkeypatch):
    """Autograd through the points (the tail's constants depend on x): the torch head, whose gradient w.r.t. x is
    autograd's."""
    calls = []
    real = mlp_head_cpu.FieldHeadFunction.apply
    monkeypatch.setattr(mlp_head_cpu.FieldHeadFunction, "apply", lambda *a: calls.append(1) or real(*a))
    field = RadianceField(FieldConfig(blob_density=5.0))
    x = (torch.rand(200, 3) * 1.2 - 0.6).requires_grad_(True)
    sigma = field.density(x)
    (gx,) = torch.autograd.grad(sigma.sum(), x)
    assert not calls and gx.abs().sum() > 0
    n = field.query(x.detach(), normals=True).normals  # fused: -grad sigma / |grad sigma|
    assert len(calls) == 1
    inside = sigma.detach() > 1e-3
    cos = -(gx[inside] * n[inside]).sum(-1) / gx[inside].norm(dim=-1)
    assert cos.min() > 0.999


def test_trunc_exp_gradient_is_clamped():
    x = torch.tensor([0.0, 20.0], requires_grad=True)
    head.trunc_exp(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(torch.tensor([0.0, 15.0])))
