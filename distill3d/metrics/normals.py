"""Surface orientation against the ground truth (normal error) and a ground-truth-free bumpiness (roughness).

* ``normal_error``: ``n_points`` points sampled uniformly by area on the asset's surface, each with the normal of
  the face it lies on (faces counter-clockwise seen from outside, ``TexturedMesh``'s convention); the ground truth's
  normal there is the normalised gradient of the toy object's analytic SDF at the point, which for an exact
  Euclidean SDF is the normal at the *nearest ground-truth surface point* (exact, no ground-truth mesh needed). The
  error of a point is the angle between the two, in degrees (0 = parallel, 90 = perpendicular, 180 = a face turned
  inside out: orientation counts). Reported: mean, median and 90th percentile over the points. It mixes shape and
  bumps: a disc scored against a torus has large errors around the hole, a bumpy sphere against a sphere too.
* ``roughness``: the mean angle, in degrees, between the normals of adjacent faces (every pair of faces sharing an
  edge, after merging vertices duplicated at UV seams), weighted by the pair's mean face area: 0 for a plane; a
  smooth curved surface gives about edge length / radius of curvature (radians), so it depends on the tessellation
  as well as on the shape: compare meshes extracted at the same resolution (the suite reports the ground-truth
  mesh's own value beside the asset's; that mesh is marching cubes at 96^3, and a 128^3 mesh of the same smooth
  shape, extract_mesh's default, scores ~25 % lower).

Measured (10,000 samples): ground-truth meshes (marching cubes of the analytic SDF) have a normal error of 0.6-1.4
degrees at 128^3 and 0.8-2.1 at 96^3 (facets; bevelled sharp edges of cube, cylinder and cone), roughness 0.9-2.2 at
128^3 and 1.2-2.8 at 96^3 (the torus, most curved, highest). Moving a 128^3 ground-truth mesh's vertices along
their normals by N(0, 0.002) (an eighth of a voxel) gives ~15 degrees of either, N(0, 0.01) ~50; smooth bumps of
amplitude 0.01 and wavelength ~0.16 give error ~17, roughness ~10. DreamFusion's "a blue torus" at defaults (a
bumpy disc): error 27, roughness 7.0. Both grow monotonically with the noise (tests/test_metrics_normals.py).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import trimesh

from distill3d.mesh.types import TexturedMesh
from distill3d.toyworld import sdf as sdfs
from distill3d.toyworld.vocab import ObjectSpec


def to_trimesh(mesh: TexturedMesh, merge: bool = True) -> trimesh.Trimesh:
    """The mesh's geometry as a float64 ``trimesh.Trimesh``; ``merge`` joins vertices at the same position (UV
    seams split them in a GLB) so that faces across a seam are adjacent. Face order and count are kept."""
    return trimesh.Trimesh(mesh.vertices.detach().cpu().double().numpy(), mesh.faces.detach().cpu().numpy(),
                           process=merge, validate=False)


def sdf_normals(fn: Callable[[torch.Tensor], torch.Tensor], points: np.ndarray) -> np.ndarray:
    """(N, 3) unit gradients of the signed distance ``fn`` ((N, 3) -> (N,)) at points (N, 3), by autograd in float64;
    rows where the gradient is not finite or vanishes (the medial axis, e.g. a sphere's centre) are NaN."""
    p = torch.as_tensor(points, dtype=torch.float64).clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(fn(p).sum(), p)
    g = grad.detach().numpy()
    norm = np.linalg.norm(g, axis=1, keepdims=True)
    ok = np.isfinite(g).all(axis=1, keepdims=True) & (norm > 1e-9)
    return np.where(ok, g / np.where(ok, norm, 1.0), np.nan)


def angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) angles in degrees between unit vectors a (N, 3) and b (N, 3) (NaN rows give NaN)."""
    return np.degrees(np.arccos(np.clip((a * b).sum(axis=1), -1.0, 1.0)))


def normal_error(
    mesh: TexturedMesh, gt: ObjectSpec | str | Callable[[torch.Tensor], torch.Tensor], n_points: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Angle (degrees) between the asset's face normals and the ground truth's normals at the nearest ground-truth
    surface points (gradient of the analytic SDF), over ``n_points`` area-uniform samples of ``mesh``.

    gt: a toy ``ObjectSpec`` / shape name or a signed-distance function (N, 3) float64 -> (N,), exact Euclidean.
    Returns {mean_deg, median_deg, p90_deg, n_points}; values None for a mesh without area.
    """
    fn = gt if callable(gt) else (lambda p: sdfs.sdf(gt, p))
    empty = {"mean_deg": None, "median_deg": None, "p90_deg": None, "n_points": 0}
    if mesh.faces.numel() == 0:
        return empty
    tm = to_trimesh(mesh, merge=False)
    if tm.area <= 0:
        return empty
    points, face_index = trimesh.sample.sample_surface(tm, n_points, seed=seed)
    angles = angles_deg(np.asarray(tm.face_normals)[face_index], sdf_normals(fn, np.asarray(points)))
    angles = angles[np.isfinite(angles)]
    if len(angles) == 0:
        return empty
    return {"mean_deg": float(angles.mean()), "median_deg": float(np.median(angles)),
            "p90_deg": float(np.percentile(angles, 90)), "n_points": int(len(angles))}


def roughness(mesh: TexturedMesh) -> float | None:
    """Area-weighted mean angle (degrees) between the normals of faces sharing an edge (vertices merged first):
    weight of a pair = mean area of its two faces. None for a mesh with no adjacent faces."""
    if mesh.faces.numel() == 0:
        return None
    tm = to_trimesh(mesh, merge=True)
    pairs = np.asarray(tm.face_adjacency)
    if len(pairs) == 0:
        return None
    area = np.asarray(tm.area_faces)
    weights = area[pairs].mean(axis=1)
    if weights.sum() <= 0:
        return None
    return float(np.degrees(np.average(np.asarray(tm.face_adjacency_angles), weights=weights)))


def surface_metrics(
    mesh: TexturedMesh, spec: ObjectSpec, gt_mesh: TexturedMesh | None = None, n_points: int = 10000, seed: int = 0,
) -> dict[str, Any]:
    """The suite's ``normals`` entry: {error_deg (mean normal error), error_median_deg, error_p90_deg, n_points,
    roughness_deg, gt_roughness_deg (of ``gt_mesh``, None without it)}; degrees, JSON-able."""
    err = normal_error(mesh, spec, n_points, seed)
    return {
        "error_deg": err["mean_deg"], "error_median_deg": err["median_deg"], "error_p90_deg": err["p90_deg"],
        "n_points": err["n_points"], "roughness_deg": roughness(mesh),
        "gt_roughness_deg": None if gt_mesh is None else roughness(gt_mesh),
    }
