"""Mesh regularisers for optimised surfaces (Magic3D's refine stage, Lin et al. 2023, Sec. 4 / threestudio's
``loss_normal_consistency`` and ``loss_laplacian_smoothness``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill3d.mesh.topology import EdgeTopology, edge_topology


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V, 3), (F, 3) -> (F, 3) unit normals of faces counter-clockwise seen from outside (outward)."""
    v = vertices[faces]
    return F.normalize(torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1), dim=-1, eps=1e-12)


def normal_consistency(
    vertices: torch.Tensor, faces: torch.Tensor, topology: EdgeTopology | None = None, min_area_fraction: float = 1e-2,
) -> torch.Tensor:
    """Mean over edges shared by two faces of 1 - cos(angle between their normals); () tensor, 0 for no such edge.
    vertices (V, 3) (gradients flow to them), faces (F, 3).

    Pairs with a face smaller than ``min_area_fraction`` of the mean face area are left out (chosen without
    gradient): marching tets makes slivers and zero-area faces wherever the SDF is near 0 at a grid vertex, and the
    gradient of a unit normal grows like 1 / the face's size, so one sliver would dominate the gradient (and any
    gradient-norm clipping)."""
    topo = edge_topology(faces, vertices.shape[0]) if topology is None else topology
    pairs = topo.interior_face_pairs
    v = vertices[faces]
    c = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)  # (F, 3), |c| = 2 area
    with torch.no_grad():
        size = c.norm(dim=-1)
        big = size > min_area_fraction * size.mean()
        pairs = pairs[big[pairs[:, 0]] & big[pairs[:, 1]]]
    if pairs.shape[0] == 0:
        return vertices.sum() * 0.0
    c0, c1 = c[pairs[:, 0]], c[pairs[:, 1]]  # only faces above the size threshold: no 0 / 0 below
    cos = (c0 * c1).sum(-1) / (c0.norm(dim=-1) * c1.norm(dim=-1))
    return (1.0 - cos).mean()


def laplacian_smoothness(
    vertices: torch.Tensor, faces: torch.Tensor, topology: EdgeTopology | None = None
) -> torch.Tensor:
    """Uniform Laplacian: mean over vertices of |v - mean of its edge neighbours|^2; () tensor.
    vertices (V, 3), faces (F, 3)."""
    topo = edge_topology(faces, vertices.shape[0]) if topology is None else topology
    a, b = topo.edges.unbind(-1)
    if a.numel() == 0:
        return vertices.sum() * 0.0
    nsum = torch.zeros_like(vertices).index_add(0, a, vertices[b]).index_add(0, b, vertices[a])
    one = torch.ones_like(a, dtype=vertices.dtype)
    deg = torch.zeros(vertices.shape[0], device=vertices.device, dtype=vertices.dtype)
    deg = deg.index_add(0, a, one).index_add(0, b, one)
    used = deg > 0
    lap = vertices[used] - nsum[used] / deg[used, None]
    return (lap * lap).sum(-1).mean()
