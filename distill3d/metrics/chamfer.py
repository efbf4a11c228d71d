"""Chamfer distance between two meshes' surfaces, from area-uniform surface samples.

With point sets A (sampled on mesh a) and B (on mesh b), the directed distances are the mean nearest-neighbour
(Euclidean, world units) distances a_to_b = mean_{x in A} min_{y in B} |x - y| and b_to_a likewise; the symmetric
Chamfer distance reported is their mean, (a_to_b + b_to_a) / 2 (the L1, non-squared form; two samplings of the same
surface give about the sample spacing). The F-score at ``tau`` (Tatarchenko et al. 2019) is the harmonic mean of
precision = P(d(x, B) < tau) and recall = P(d(y, A) < tau).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from distill3d.mesh.types import TexturedMesh


def sample_surface(mesh: TexturedMesh, n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) float64 points uniform by area on ``mesh`` (deterministic for ``seed``); (0, 3) for an empty mesh."""
    if mesh.faces.numel() == 0:
        return np.zeros((0, 3))
    tm = trimesh.Trimesh(
        mesh.vertices.detach().cpu().numpy().astype(np.float64), mesh.faces.detach().cpu().numpy(), process=False
    )
    if tm.area <= 0:
        return np.zeros((0, 3))
    points, _ = trimesh.sample.sample_surface(tm, n, seed=seed)
    return np.asarray(points, dtype=np.float64)


def chamfer_points(a: np.ndarray, b: np.ndarray, tau: float = 0.05) -> dict[str, Any]:
    """Chamfer distance and F-score of point sets a (N, 3) and b (M, 3); all None if either is empty."""
    if len(a) == 0 or len(b) == 0:
        return {"chamfer": None, "a_to_b": None, "b_to_a": None, "fscore": None, "tau": tau}
    d_ab, _ = cKDTree(b).query(a)
    d_ba, _ = cKDTree(a).query(b)
    precision, recall = float((d_ab < tau).mean()), float((d_ba < tau).mean())
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {
        "chamfer": float((d_ab.mean() + d_ba.mean()) / 2), "a_to_b": float(d_ab.mean()),
        "b_to_a": float(d_ba.mean()), "fscore": fscore, "tau": tau,
    }


def chamfer_distance(
    a: TexturedMesh, b: TexturedMesh, n_points: int = 10000, seed: int = 0, tau: float = 0.05
) -> dict[str, Any]:
    """Symmetric Chamfer distance between meshes a and b from ``n_points`` surface samples each.

    Returns {chamfer, a_to_b, b_to_a, fscore, tau, n_points}; a mesh without area gives None values.
    """
    out = chamfer_points(sample_surface(a, n_points, seed), sample_surface(b, n_points, seed + 1), tau)
    out["n_points"] = n_points
    return out
