"""A tetrahedral grid made by code (DMTet's grid, Shen et al. 2021; used by Magic3D's refine stage, Lin et al. 2023).

Written here instead of loading Quartet files (what threestudio ships): the grid is a box of ``n_x * n_y * n_z``
cube cells, each split into 6 tetrahedra around its main diagonal (the Kuhn / Freudenthal split): for every
permutation (a, b, c) of the axes, the tet walks from the cell's corner (0, 0, 0) along e_a, then e_b, then e_c to
(1, 1, 1). Every cell is split the same way, so two neighbouring cells triangulate their shared square face with the
same diagonal and the grid has no cracks. Odd permutations give negatively oriented tets; their last two vertices are
swapped, so every tet has det[p1 - p0, p2 - p0, p3 - p0] > 0 (what ``marching_tets`` relies on for its winding).

Vertex (i, j, k) (cell corner indices along x, y, z) has index ``(i * (n_y + 1) + j) * (n_z + 1) + k`` and position
``bbox_min + (i, j, k) * cell_size``.

The smallest altitude of these tets is cell / sqrt(2) and their face normals have |n|_1 <= sqrt(2), so moving every
vertex by at most ``f * cell`` per axis (``tanh`` offsets, see ``dmtet.DMTetScene``) cannot invert a tet when f < 1/4.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch


@dataclass
class TetGrid:
    """vertices (N, 3) float32 world positions; tets (T, 4) int64, positively oriented; resolution (n_x, n_y, n_z)
    cells per axis; cell_size (3,) float32 world size of a cell per axis; boundary (N,) bool, True for vertices on
    the box's faces. ``edges`` (E, 2) int64 (sorted pairs, a < b) is the grid's unique edges (computed on first use)."""

    vertices: torch.Tensor
    tets: torch.Tensor
    resolution: tuple[int, int, int]
    cell_size: torch.Tensor
    boundary: torch.Tensor
    _edges: torch.Tensor | None = None

    @property
    def edges(self) -> torch.Tensor:
        if self._edges is None:
            self._edges = unique_edges(self.tets, self.vertices.shape[0])
        return self._edges

    @property
    def bbox(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(3,) min and (3,) max corner of the box."""
        return self.vertices.amin(0), self.vertices.amax(0)

    def to(self, device: torch.device | str) -> "TetGrid":
        e = None if self._edges is None else self._edges.to(device)
        return TetGrid(self.vertices.to(device), self.tets.to(device), self.resolution, self.cell_size.to(device),
                       self.boundary.to(device), e)


# The six local edges of a tet (vertex pairs), in the order marching_tets uses.
TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def _kuhn_offsets() -> torch.Tensor:
    """(6, 4, 3) corner offsets (0/1) of the 6 tets of a unit cube, each positively oriented."""
    eye = torch.eye(3, dtype=torch.long)
    tets = []
    for perm in itertools.permutations(range(3)):
        p0 = torch.zeros(3, dtype=torch.long)
        p1 = p0 + eye[perm[0]]
        p2 = p1 + eye[perm[1]]
        p3 = p2 + eye[perm[2]]
        t = torch.stack([p0, p1, p2, p3])
        if torch.linalg.det((t[1:] - t[0]).double()) < 0:
            t = t[[0, 1, 3, 2]]
        tets.append(t)
    return torch.stack(tets)


def tet_grid(
    resolution: int | tuple[int, int, int], bbox_min, bbox_max, device: torch.device | str = "cpu"
) -> TetGrid:
    """A grid of ``resolution`` cube cells per axis (an int or (n_x, n_y, n_z)) filling the box
    [bbox_min, bbox_max] ((3,) each), each cell split into 6 positively oriented tets (module docstring).
    Returns a ``TetGrid`` with (n_x + 1)(n_y + 1)(n_z + 1) vertices and 6 n_x n_y n_z tets."""
    res = (resolution,) * 3 if isinstance(resolution, int) else tuple(int(r) for r in resolution)
    if len(res) != 3 or min(res) < 1:
        raise ValueError(f"resolution must be a positive int or three of them, got {resolution!r}")
    lo = torch.as_tensor(bbox_min, dtype=torch.float32, device=device).reshape(3)
    hi = torch.as_tensor(bbox_max, dtype=torch.float32, device=device).reshape(3)
    if not bool((hi > lo).all()):
        raise ValueError(f"empty box: {lo.tolist()} .. {hi.tolist()}")
    nx, ny, nz = res
    cell = (hi - lo) / torch.tensor(res, dtype=torch.float32, device=device)
    axes = [torch.arange(n + 1, device=device) for n in res]
    ijk = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # (N, 3) corner indices
    vertices = lo + ijk.float() * cell
    # Interior of the box exactly: the last corner lands on bbox_max up to rounding; snap it.
    vertices = torch.where(ijk == torch.tensor(res, device=device), hi, vertices)
    boundary = ((ijk == 0) | (ijk == torch.tensor(res, device=device))).any(-1)

    cells = torch.stack(torch.meshgrid(*[torch.arange(n, device=device) for n in (nx, ny, nz)], indexing="ij"),
                        dim=-1).reshape(-1, 1, 1, 3)  # (C, 1, 1, 3)
    corners = cells + _kuhn_offsets().to(device)[None]  # (C, 6, 4, 3)
    index = (corners[..., 0] * (ny + 1) + corners[..., 1]) * (nz + 1) + corners[..., 2]
    tets = index.reshape(-1, 4)
    return TetGrid(vertices=vertices, tets=tets, resolution=res, cell_size=cell, boundary=boundary)


def unique_edges(tets: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """(T, 4) tets -> (E, 2) int64 unique undirected edges, each sorted (a < b), in lexicographic order."""
    pairs = tets[:, torch.tensor(TET_EDGES, device=tets.device)].reshape(-1, 2)  # (6T, 2)
    a, b = torch.minimum(pairs[:, 0], pairs[:, 1]), torch.maximum(pairs[:, 0], pairs[:, 1])
    key = torch.unique(a * n_vertices + b)
    return torch.stack([torch.div(key, n_vertices, rounding_mode="floor"), key % n_vertices], dim=-1)


def tet_volumes(vertices: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    """(N, 3) vertices, (T, 4) tets -> (T,) signed volumes det[p1 - p0, p2 - p0, p3 - p0] / 6."""
    p = vertices[tets]
    return torch.linalg.det(p[:, 1:] - p[:, :1]) / 6.0
