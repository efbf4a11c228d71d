"""Chamfer distance and F-score between sampled mesh surfaces."""

import numpy as np
import pytest
import torch
import trimesh

from distill3d.mesh.types import TexturedMesh
from distill3d.metrics.chamfer import chamfer_distance, chamfer_points, sample_surface
from distill3d.toyworld.gt_mesh import gt_mesh
from distill3d.toyworld.vocab import parse_prompt


def _sphere(radius: float) -> TexturedMesh:
    ico = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    return TexturedMesh(torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces))


def test_chamfer_points_exact() -> None:
    out = chamfer_points(np.array([[0.0, 0, 0]]), np.array([[1.0, 0, 0], [0, 2.0, 0]]), tau=1.5)
    assert out["a_to_b"] == 1.0 and out["b_to_a"] == 1.5 and out["chamfer"] == 1.25
    assert out["fscore"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # precision 1, recall 1/2
    assert chamfer_points(np.zeros((0, 3)), np.zeros((2, 3)))["chamfer"] is None


def test_concentric_spheres_are_their_radius_difference_apart() -> None:
    out = chamfer_distance(_sphere(0.6), _sphere(0.7), n_points=4000)
    assert out["a_to_b"] == pytest.approx(0.1, abs=0.01) and out["b_to_a"] == pytest.approx(0.1, abs=0.01)
    assert out["chamfer"] == pytest.approx(0.1, abs=0.01) and out["fscore"] == 0.0 and out["n_points"] == 4000
    same = chamfer_distance(_sphere(0.6), _sphere(0.6), n_points=4000)
    assert same["chamfer"] < 0.02 and same["fscore"] > 0.99
    points = sample_surface(_sphere(0.6), 500, seed=3)
    assert points.shape == (500, 3) and np.allclose(np.linalg.norm(points, axis=1), 0.6, atol=0.01)
    assert np.array_equal(points, sample_surface(_sphere(0.6), 500, seed=3))


def test_chamfer_tells_toy_shapes_apart() -> None:
    sphere = gt_mesh(parse_prompt("a red sphere"), resolution=40, texture_size=0)
    fine_sphere = gt_mesh(parse_prompt("a red sphere"), resolution=64, texture_size=0)
    cube = gt_mesh(parse_prompt("a red cube"), resolution=40, texture_size=0)
    near = chamfer_distance(sphere, fine_sphere, n_points=3000)["chamfer"]
    far = chamfer_distance(sphere, cube, n_points=3000)["chamfer"]
    assert near < 0.02 and far > 0.04 and far > 3 * near
    empty = TexturedMesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64))
    assert chamfer_distance(empty, sphere)["chamfer"] is None
