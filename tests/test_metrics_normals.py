"""Normal error against the analytic ground truth and ground-truth-free roughness: ~0 on ground-truth meshes, exact on
simple cases, growing monotonically with noise added to a ground-truth mesh."""

import numpy as np
import pytest
import torch
import trimesh

from distill3d.mesh.render import vertex_normals
from distill3d.mesh.types import TexturedMesh
from distill3d.metrics.normals import angles_deg, normal_error, roughness, sdf_normals, surface_metrics
from distill3d.toyworld import sdf as sdfs
from distill3d.toyworld.gt_mesh import gt_mesh
from distill3d.toyworld.vocab import parse_prompt


def _tm(t: trimesh.Trimesh) -> TexturedMesh:
    return TexturedMesh(torch.tensor(t.vertices, dtype=torch.float32), torch.tensor(t.faces))


def _grid(height, n: int = 6, size: float = 1.0) -> TexturedMesh:
    """A height field z = height(x, y) triangulated on an n x n grid of squares over [0, size]^2."""
    x, y = np.meshgrid(np.linspace(0, size, n + 1), np.linspace(0, size, n + 1), indexing="ij")
    verts = np.stack([x, y, height(x, y)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = (i * (n + 1) + j).reshape(-1)
    b, c, d = a + (n + 1), a + 1, a + n + 2
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return TexturedMesh(torch.tensor(verts, dtype=torch.float32), torch.tensor(faces))


def noisy(mesh: TexturedMesh, sigma: float, kind: str, seed: int = 0) -> TexturedMesh:
    """``mesh`` with its vertices moved along their normals by ``sigma`` (world units) times: independent N(0, 1) per
    vertex ("white": bumps the size of a face) or a sum of random sinusoids of wavelength ~0.16 ("bumps")."""
    normals = vertex_normals(mesh.vertices, mesh.faces)
    if kind == "white":
        d = torch.randn(mesh.vertices.shape[0], generator=torch.Generator().manual_seed(seed))
    else:
        rng = np.random.default_rng(seed)
        k = torch.tensor(rng.normal(size=(16, 3)) * 40.0, dtype=torch.float32)
        phase = torch.tensor(rng.random(16) * 2 * np.pi, dtype=torch.float32)
        d = torch.sin(mesh.vertices @ k.T + phase).sum(1) / 4.0
    return TexturedMesh(mesh.vertices + sigma * d[:, None] * normals, mesh.faces)


def test_sdf_normals_and_angles() -> None:
    pts = np.array([[0.3, 0.0, 0.0], [0.0, -2.0, 0.0], [0.1, 0.2, -0.2], [0.0, 0.0, 0.0]])
    n = sdf_normals(sdfs.sdf_sphere, pts)
    assert np.allclose(n[:3], pts[:3] / np.linalg.norm(pts[:3], axis=1, keepdims=True))
    assert np.isnan(n[3]).all()  # the centre: no direction
    x, y = np.array([[1.0, 0, 0]] * 3), np.array([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0]])
    assert np.allclose(angles_deg(x, y), [0.0, 90.0, 180.0])


def test_exact_on_simple_meshes() -> None:
    box = _tm(trimesh.creation.box(extents=(0.9, 0.9, 0.9)))
    # 18 adjacent face pairs of equal area: 6 across a face's diagonal (0 degrees), 12 across a cube edge (90).
    assert roughness(box) == pytest.approx(60.0)
    assert roughness(_grid(lambda x, y: 0.0 * x)) == pytest.approx(0.0, abs=1e-6)
    # A zigzag roof: ridges alternately +-45 degrees, adjacent faces across a ridge 90 degrees apart.
    assert roughness(_grid(lambda x, y: np.abs(((x + 0.5) % 1.0) - 0.5), n=8, size=4.0)) > 10.0
    # A box scored against the cube: faces are parallel to the ground truth's except at its rounded edges.
    err = normal_error(box, "cube", n_points=4000)
    assert err["median_deg"] < 1e-3 and err["mean_deg"] < 10 and err["n_points"] == 4000
    inside_out = normal_error(TexturedMesh(box.vertices, box.faces.flip(1)), "cube", n_points=4000)
    assert inside_out["median_deg"] > 179.9  # orientation counts
    empty = TexturedMesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64))
    assert normal_error(empty, "cube")["mean_deg"] is None and roughness(empty) is None


def test_roughness_merges_uv_seams() -> None:
    sphere = _tm(trimesh.creation.icosphere(subdivisions=3, radius=0.6))
    split = TexturedMesh(sphere.vertices[sphere.faces.reshape(-1)], torch.arange(sphere.faces.numel()).reshape(-1, 3))
    assert roughness(split) == pytest.approx(roughness(sphere), rel=1e-6)


@pytest.mark.parametrize("shape", ["sphere", "cube", "cylinder", "cone", "torus"])
def test_ground_truth_meshes_are_near_zero(shape: str) -> None:
    spec = parse_prompt(f"a red {shape}")
    out = surface_metrics(gt_mesh(spec, resolution=96, texture_size=0), spec, gt_mesh=None, n_points=4000)
    assert out["error_deg"] < 2.5 and out["error_median_deg"] < 2.0  # facets of marching cubes, bevelled edges
    assert 0.0 < out["roughness_deg"] < 3.0 and out["gt_roughness_deg"] is None


@pytest.mark.parametrize("kind", ["white", "bumps"])
@pytest.mark.parametrize("shape", ["sphere", "torus"])
def test_noise_raises_error_and_roughness_monotonically(shape: str, kind: str) -> None:
    spec = parse_prompt(f"a red {shape}")
    mesh = gt_mesh(spec, resolution=64, texture_size=0)
    scores = [surface_metrics(noisy(mesh, s, kind), spec, n_points=3000) for s in (0.0, 0.002, 0.005, 0.01, 0.02)]
    errors = [s["error_deg"] for s in scores]
    rough = [s["roughness_deg"] for s in scores]
    assert all(a < b for a, b in zip(errors, errors[1:])), errors
    assert all(a < b for a, b in zip(rough, rough[1:])), rough
    assert errors[0] < 3 and errors[-1] > 25 and rough[-1] > 5 * rough[0]
