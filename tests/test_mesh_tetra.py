"""Tetrahedral grid made by code and marching tetrahedra: crack-free positive grid, closed outward meshes, the
DMTet edge-vertex formula and its gradients."""

import math

import pytest
import torch
import trimesh

from distill3d.mesh.marching_tets import TRIANGLE_COUNT, marching_tets
from distill3d.mesh.tetra import tet_grid, tet_volumes, unique_edges


def test_grid_counts_orientation_and_no_cracks():
    g = tet_grid((3, 4, 5), [-1.0, -0.5, 0.0], [0.5, 1.5, 2.5])
    assert g.vertices.shape == (4 * 5 * 6, 3) and g.tets.shape == (6 * 60, 4)
    assert torch.allclose(g.cell_size, torch.tensor([0.5, 0.5, 0.5]))
    vol = tet_volumes(g.vertices, g.tets)
    assert (vol > 0).all()  # every tet positively oriented
    assert math.isclose(float(vol.sum()), 1.5 * 2.0 * 2.5, rel_tol=1e-5)  # they tile the box...
    # ...without cracks or overlaps: every triangle is shared by exactly two tets, except on the box's faces.
    tri = g.tets[:, [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]].reshape(-1, 3).sort(-1).values
    uniq, counts = torch.unique(tri, dim=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2}
    assert g.boundary[uniq[counts == 1]].all()
    assert int((counts == 1).sum()) == 2 * 2 * (3 * 4 + 4 * 5 + 3 * 5)  # two triangles per square on the box
    assert g.boundary.sum() == 4 * 5 * 6 - 2 * 3 * 4
    assert torch.allclose(g.bbox[0], torch.tensor([-1.0, -0.5, 0.0]))
    assert torch.allclose(g.bbox[1], torch.tensor([0.5, 1.5, 2.5]))


def test_unique_edges():
    g = tet_grid(2, [0.0] * 3, [1.0] * 3)
    e = g.edges
    assert (e[:, 0] < e[:, 1]).all() and torch.unique(e, dim=0).shape == e.shape
    # Kuhn split of an n^3 grid: axis edges 3 n (n+1)^2, face diagonals 3 n^2 (n+1), cube diagonals n^3.
    n = 2
    assert e.shape[0] == 3 * n * (n + 1) ** 2 + 3 * n**2 * (n + 1) + n**3
    assert torch.equal(unique_edges(g.tets.flip(0), g.vertices.shape[0]), e)


def test_triangle_table_counts():
    # 0 and 15: nothing; one or three vertices inside: one triangle; two inside: two.
    assert TRIANGLE_COUNT.tolist() == [0 if c in (0, 15) else (2 if bin(c).count("1") == 2 else 1) for c in range(16)]


def _trimesh(v, f):
    return trimesh.Trimesh(v.detach().numpy(), f.numpy(), process=False)


def test_sphere_is_closed_outward_and_has_the_right_volume():
    g = tet_grid(32, [-1.0] * 3, [1.0] * 3)
    r = 0.6
    v, f = marching_tets(g.vertices, g.vertices.norm(dim=-1) - r, g.tets)
    m = _trimesh(v, f)
    assert m.is_watertight and m.is_winding_consistent
    assert m.volume > 0  # positive signed volume: faces CCW seen from outside (outward normals)
    assert abs(m.volume / (4 / 3 * math.pi * r**3) - 1) < 0.02
    # one vertex per crossed edge: no duplicates
    assert torch.unique(v.detach(), dim=0).shape[0] == v.shape[0]
    # outward: face normals point away from the centre
    n = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=-1)
    assert ((n * v[f].mean(1)).sum(-1) > 0).all()
    assert torch.allclose(v.norm(dim=-1), torch.full((v.shape[0],), r), atol=0.01)


def test_random_sdf_gives_closed_consistently_wound_surfaces():
    """Every case of the table on a random field: closed, consistently wound, every component outward."""
    g = tet_grid(6, [-1.0] * 3, [1.0] * 3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        sdf = torch.randn(g.vertices.shape[0], generator=gen) + 0.3
        sdf = torch.where(g.boundary, sdf.abs() + 0.1, sdf)  # outside on the box: closed
        v, f = marching_tets(g.vertices, sdf, g.tets)
        m = _trimesh(v, f)
        assert m.is_watertight and m.is_winding_consistent
        for part in m.split(only_watertight=False):
            assert part.volume > 0


def test_edge_vertex_formula_and_gradients():
    g = tet_grid(1, [0.0] * 3, [1.0] * 3)
    sdf = torch.tensor([-0.25, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75])  # only vertex 0 (the origin) inside
    pos = g.vertices.clone().requires_grad_(True)
    s = sdf.clone().requires_grad_(True)
    v, f = marching_tets(pos, s, g.tets)
    # The three axis edges from the origin are cut at a quarter: (p_a (-s_b) + p_b s_a) / (s_a - s_b).
    assert v.shape[0] == 7 and f.shape[0] == 6
    for axis in range(3):
        e = torch.zeros(3)
        e[axis] = 0.25
        assert (v - e).norm(dim=-1).min() < 1e-6
    # Gradient w.r.t. s_a of the point on the x edge: d/ds_a [s_a / (s_a - s_b)] = -s_b / (s_a - s_b)^2 = -0.75.
    ix = int((v - torch.tensor([0.25, 0.0, 0.0])).norm(dim=-1).argmin())
    v[ix, 0].backward()
    assert s.grad[0] == pytest.approx(-0.75)
    assert pos.grad[0, 0] == pytest.approx(0.75) and pos.grad.abs().sum() == pytest.approx(1.0)  # 0.75 p_a + 0.25 p_b


def test_no_sign_change_gives_an_empty_mesh():
    g = tet_grid(4, [-1.0] * 3, [1.0] * 3)
    v, f = marching_tets(g.vertices, torch.ones(g.vertices.shape[0]), g.tets)
    assert v.shape == (0, 3) and f.shape == (0, 3)
