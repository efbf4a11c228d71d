"""SDF field: VolSDF density against its closed form, sphere initialisation, normals, eikonal, save/load, mesh
extraction at the zero level (watertight), and initialisation from a mesh with pysdf."""

from __future__ import annotations

import math

import pytest
import torch

from distill3d.fields.encoding import HashGridConfig
from distill3d.fields.sdf import SDFConfig, SDFField, laplace_cdf, volsdf_density

SMALL = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=4, max_resolution=32)


def _field(**kw) -> SDFField:
    torch.manual_seed(0)
    return SDFField(SDFConfig(encoding=SMALL, **kw))


def test_volsdf_density_matches_closed_form() -> None:
    beta = 0.07
    s = torch.linspace(-1.0, 1.0, 401, dtype=torch.float64)
    # Psi_beta(u) = 1/2 exp(u / beta) for u <= 0, 1 - 1/2 exp(-u / beta) for u > 0; sigma = Psi_beta(-s) / beta
    u = -s
    closed = torch.where(u <= 0, 0.5 * torch.exp(u / beta), 1 - 0.5 * torch.exp(-u / beta)) / beta
    assert torch.allclose(volsdf_density(s, beta), closed, atol=1e-12, rtol=1e-10)
    assert math.isclose(float(volsdf_density(torch.tensor(0.0), beta)), 0.5 / beta, rel_tol=1e-6)  # alpha / 2
    # Laplace CDF: monotone, 0 / 1 in the tails, and its derivative is the Laplace density exp(-|u|/b) / (2b).
    x = torch.tensor([-0.3, -0.01, 0.02, 0.4], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(laplace_cdf(x, beta).sum(), x)
    assert torch.allclose(g, torch.exp(-x.detach().abs() / beta) / (2 * beta), rtol=1e-9)
    assert float(laplace_cdf(torch.tensor(-50.0), beta)) == 0.0 and float(laplace_cdf(torch.tensor(50.0), beta)) == 1.0


def test_sphere_initialisation_density_normals_eikonal() -> None:
    f = _field(init_radius=0.5, beta_init=0.05)
    x = torch.randn(512, 3)
    x = x / x.norm(dim=-1, keepdim=True) * torch.rand(512, 1) * 0.95
    s = f.sdf(x)
    assert (s - (x.norm(dim=-1) - 0.5)).abs().max() < 0.05  # starts at the sphere
    # density is the closed form of the field's own SDF, zero outside the box
    assert torch.allclose(f.density(x), volsdf_density(s, f.beta), atol=1e-6)
    assert float(f.density(torch.tensor([[1.2, 0.0, 0.0]])).detach()) == 0.0
    out = f.query(x, normals=True)
    radial = x / x.norm(dim=-1, keepdim=True)
    far = x.norm(dim=-1) > 0.2
    assert (out.normals[far] * radial[far]).sum(-1).mean() > 0.95  # outward
    assert float(f.eikonal_loss(1024, torch.Generator().manual_seed(0)).detach()) < 0.1
    # gradients reach the hash grid, the MLP and beta
    f.eikonal_loss(64).backward()
    f.density(x).sum().backward()
    assert f.encoding.table.grad is not None and f.log_beta.grad is not None


def test_save_load_and_extract_mesh_at_zero_level(tmp_path) -> None:
    from distill3d.fields.loading import load_field
    from stages.core.execute import execute
    from stages.core.params import load_params
    from stages.core.protocol import get_stage

    f = _field(init_radius=0.55)
    f.save(tmp_path / "field")
    g = load_field(tmp_path / "field")
    assert isinstance(g, SDFField) and g.iso_inside == "below" and g.iso_level == 0.0
    x = torch.rand(100, 3) * 2 - 1
    assert torch.allclose(f.sdf(x), g.sdf(x))
    stage = get_stage("extract_mesh")
    out = execute(stage, load_params(stage, None, None, ["resolution=40"]), {"nerf": tmp_path / "field"},
                  tmp_path / "mesh")
    import json

    info = json.loads((out / "level.json").read_text())
    assert info["inside"] == "below" and info["level"] == 0.0 and info["watertight"]
    from distill3d.mesh.gltf import load_glb

    r = load_glb(out / "mesh.glb").vertices.norm(dim=-1)
    assert abs(float(r.mean()) - 0.55) < 0.03


def test_fit_sdf_to_mesh_with_pysdf() -> None:
    pytest.importorskip("pysdf")
    import trimesh

    from distill3d.fields.sdf_init import MeshInitConfig, fit_sdf_to_mesh, mesh_signed_distance
    from distill3d.mesh.types import TexturedMesh

    box = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    mesh = TexturedMesh(torch.as_tensor(box.vertices, dtype=torch.float32), torch.as_tensor(box.faces),
                        vertex_colors=torch.tensor([[0.9, 0.1, 0.1]]).expand(len(box.vertices), 3).clone())
    target = mesh_signed_distance(mesh)
    assert float(target(torch.zeros(1, 3))) == pytest.approx(-0.4, abs=1e-4)  # negative inside
    f = _field(init_radius=0.5)
    x = (torch.rand(2000, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.8
    before = float((f.sdf(x) - target(x)).abs().mean())
    info = fit_sdf_to_mesh(f, mesh, MeshInitConfig(steps=60, batch=1024))
    after = float((f.sdf(x).detach() - target(x)).abs().mean())
    assert after < 0.5 * before and info["final_abs_error"] < 0.05
    assert (f.albedo(torch.tensor([[0.4, 0.0, 0.0]]))[0] - torch.tensor([0.9, 0.1, 0.1])).abs().max() < 0.25


def test_loading_a_field_as_the_other_type_names_both_types(tmp_path) -> None:
    """RadianceField.load on a saved SDF (and SDFField.load on a saved NeRF) refuses with one line naming what the
    folder holds and what was asked for, instead of loading weights into the wrong module."""
    from distill3d.fields.nerf import FieldConfig, RadianceField

    _field(init_radius=0.5).save(tmp_path / "sdf")
    RadianceField(FieldConfig(hidden_width=16)).save(tmp_path / "nerf")
    wrong = r"holds a field of type 'SDFField', not 'RadianceField': load it with .*load_field"
    with pytest.raises(ValueError, match=wrong):
        RadianceField.load(tmp_path / "sdf")
    with pytest.raises(ValueError, match=r"holds a field of type 'RadianceField', not 'SDFField'"):
        SDFField.load(tmp_path / "nerf")
