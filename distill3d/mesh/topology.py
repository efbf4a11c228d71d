"""Edge topology of a triangle mesh: unique edges, the faces on each side, the edges of each face.

Used by the antialiasing pass (which edges can be silhouettes) and by mesh regularisers (adjacent face pairs for
normal consistency, vertex neighbours for the Laplacian). Vectorised (one sort), no Python loop over faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EdgeTopology:
    """edges (E, 2) int64 vertex ids, sorted (a < b); edge_faces (E, 2) int64 the first two faces using the edge
    (-1 where there is no second); face_edges (F, 3) int64, ``face_edges[f, k]`` = the edge from ``faces[f, k]`` to
    ``faces[f, (k + 1) % 3]``; face_count (E,) int64 how many faces use the edge (2 on a closed manifold)."""

    edges: torch.Tensor
    edge_faces: torch.Tensor
    face_edges: torch.Tensor
    face_count: torch.Tensor

    @property
    def manifold(self) -> torch.Tensor:
        """(E,) bool, True for edges with exactly two faces."""
        return self.face_count == 2

    @property
    def interior_face_pairs(self) -> torch.Tensor:
        """(P, 2) int64 the two faces of every edge shared by exactly two faces."""
        return self.edge_faces[self.manifold]


@torch.no_grad()
def edge_topology(faces: torch.Tensor, n_vertices: int | None = None) -> EdgeTopology:
    """faces (F, 3) int64 -> ``EdgeTopology``. ``n_vertices`` defaults to faces.max() + 1."""
    faces = faces.long()
    F, device = faces.shape[0], faces.device
    n = int(faces.max()) + 1 if n_vertices is None and F > 0 else int(n_vertices or 0)
    half = torch.stack([faces, faces.roll(-1, dims=1)], dim=-1).reshape(-1, 2)  # (3F, 2): (f, k) -> k, k + 1
    key = torch.minimum(half[:, 0], half[:, 1]) * n + torch.maximum(half[:, 0], half[:, 1])
    uniq, inv, count = torch.unique(key, return_inverse=True, return_counts=True)
    order = torch.argsort(inv, stable=True)
    face_of_half = torch.arange(F, device=device).repeat_interleave(3)[order]
    start = count.cumsum(0) - count
    second = torch.where(count >= 2, face_of_half[(start + 1).clamp_max(max(3 * F - 1, 0))], -1)
    edge_faces = torch.stack([face_of_half[start], second], dim=-1) if F > 0 else \
        torch.zeros(0, 2, dtype=torch.long, device=device)
    edges = torch.stack([torch.div(uniq, max(n, 1), rounding_mode="floor"), uniq % max(n, 1)], dim=-1)
    return EdgeTopology(edges=edges, edge_faces=edge_faces, face_edges=inv.reshape(F, 3), face_count=count)
