"""Marching cubes extraction: coordinates, orientation, watertightness, largest component."""

import math

import numpy as np
import pytest
import torch
import trimesh

from distill3d.mesh.extract import extract_isosurface, sample_grid


def as_trimesh(m):
    return trimesh.Trimesh(m.vertices.numpy(), m.faces.numpy(), process=False)


def face_normals_and_centres(m):
    v = m.vertices[m.faces]
    n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
    return n, v.mean(1)


def test_sample_grid_index_mapping():
    g = sample_grid(lambda p: p[:, 0] + 10 * p[:, 1] + 100 * p[:, 2], 5, bound=2.0, chunk=7)
    assert g.shape == (5, 5, 5)
    assert g[0, 0, 0] == pytest.approx(-222.0) and g[4, 4, 4] == pytest.approx(222.0)
    assert g[4, 0, 0] == pytest.approx(2 - 20 - 200) and g[2, 3, 0] == pytest.approx(0 + 10 - 200)


@pytest.mark.parametrize("inside", ["below", "above"])
def test_offcentre_sphere_sdf_and_density(inside):
    centre = torch.tensor([0.25, -0.1, 0.05])
    r = 0.5
    sdf = lambda p: (p - centre).norm(dim=-1) - r  # noqa: E731
    grid = sample_grid(sdf, 40, bound=1.0)
    if inside == "above":  # a density-like field: larger inside
        grid, level = 2.0 - grid, 2.0
    else:
        level = 0.0
    m = extract_isosurface(grid, level, bound=1.0, inside=inside)
    radii = (m.vertices - centre).norm(dim=-1)
    assert radii.mean().item() == pytest.approx(r, abs=2e-3)
    assert radii.std().item() < 5e-3
    tm = as_trimesh(m)
    assert tm.is_watertight
    assert tm.volume == pytest.approx(4 / 3 * math.pi * r**3, rel=0.02)  # positive: outward winding
    n, c = face_normals_and_centres(m)
    assert ((n * (c - centre)).sum(-1) > 0).all()  # every face normal points away from the centre
    assert m.vertices.dtype == torch.float32 and m.faces.dtype == torch.int64


def test_surface_cut_by_box_is_closed_and_inside_bound():
    m = extract_isosurface(sample_grid(lambda p: p.norm(dim=-1) - 1.2, 20, bound=1.0), 0.0, inside="below")
    assert m.vertices.abs().max() <= 1.0 + 1e-6
    tm = as_trimesh(m)
    assert tm.is_watertight and tm.volume > 0


def test_keeps_largest_component_and_removes_degenerate_faces():
    a, b = torch.tensor([0.5, 0.0, 0.0]), torch.tensor([-0.5, 0.0, 0.0])
    two = lambda p: torch.minimum((p - a).norm(dim=-1) - 0.3, (p - b).norm(dim=-1) - 0.2)  # noqa: E731
    grid = sample_grid(two, 32)
    big = extract_isosurface(grid, 0.0, inside="below")
    assert torch.allclose(big.vertices.mean(0), a, atol=1e-2)
    both = extract_isosurface(grid, 0.0, inside="below", keep_largest=False)
    assert len(both.faces) > len(big.faces)
    n, _ = face_normals_and_centres(both)
    assert (n.norm(dim=-1) > 0).all()
    assert len(as_trimesh(both).split(only_watertight=False)) == 2


def test_empty_level_set_raises():
    with pytest.raises(ValueError):
        extract_isosurface(np.ones((8, 8, 8)), 0.0, inside="below")
