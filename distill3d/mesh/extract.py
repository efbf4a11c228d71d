"""Iso-surface extraction: sample a scalar field on a grid, marching cubes (PyMCubes), clean-up with trimesh.

Grid convention: ``values[i, j, k] = fn(x_i, y_j, z_k)`` with ``x_i = -bound + 2 * bound * i / (R - 1)`` (the grid's
corner samples lie exactly on the box faces), so marching-cubes vertex index coordinates map to world coordinates by
the same affine formula.
"""

from __future__ import annotations

from typing import Callable, Literal

import mcubes
import numpy as np
import torch
import trimesh

from distill3d.mesh.types import TexturedMesh


def grid_points(resolution: int, bound: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """(R, R, R, 3) world coordinates of the sampling grid (``indexing="ij"``: axis 0 is x, 1 is y, 2 is z)."""
    x = torch.linspace(-bound, bound, resolution, device=device)
    return torch.stack(torch.meshgrid(x, x, x, indexing="ij"), dim=-1)


@torch.no_grad()
def sample_grid(
    fn: Callable[[torch.Tensor], torch.Tensor], resolution: int, bound: float = 1.0, chunk: int = 65536,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Evaluate ``fn`` ((N, 3) world points -> (N,) values) on an R^3 grid over [-bound, bound]^3, ``chunk`` points
    at a time, without gradients. Returns (R, R, R) float32 on CPU, ``values[i, j, k] = fn(x_i, y_j, z_k)``."""
    pts = grid_points(resolution, bound, device).reshape(-1, 3)
    out = torch.empty(pts.shape[0], dtype=torch.float32)
    for s in range(0, pts.shape[0], chunk):
        out[s : s + chunk] = fn(pts[s : s + chunk]).reshape(-1).float().cpu()
    return out.reshape(resolution, resolution, resolution)


def extract_isosurface(
    values: torch.Tensor | np.ndarray, level: float, bound: float = 1.0,
    inside: Literal["above", "below"] = "above", keep_largest: bool = True,
) -> TexturedMesh:
    """Marching cubes of the ``level`` set of a grid from ``sample_grid``.

    values (R, R, R); ``inside="above"`` for densities (value > level is inside), ``"below"`` for SDFs (negative
    inside). The grid is padded with one layer of "outside" values so that surfaces cut by the box are closed (their
    caps are clamped onto the box faces); vertices are in world units within [-bound, bound]^3, faces are
    counter-clockwise seen from outside (outward normals), duplicate vertices merged, degenerate faces removed and,
    with ``keep_largest``, only the connected component with the most faces kept.
    Returns a ``TexturedMesh`` without colours; raises ``ValueError`` if the level set is empty.
    """
    if inside not in ("above", "below"):
        raise ValueError(f"inside must be 'above' or 'below', got {inside!r}")
    vol = values.detach().cpu().double().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, np.float64)
    if vol.ndim != 3:
        raise ValueError(f"values must be (R, R, R), got {vol.shape}")
    # Work with "inside = above": PyMCubes then emits faces counter-clockwise seen from the lower-valued (outside)
    # side, i.e. outward normals (checked by tests/test_mesh_extract.py on a sphere).
    field = vol - level if inside == "above" else level - vol
    field = np.nan_to_num(field, nan=-1.0, posinf=1.0, neginf=-1.0)
    field = np.pad(field, 1, mode="constant", constant_values=-1.0)
    verts, faces = mcubes.marching_cubes(field, 0.0)
    if len(faces) == 0:
        raise ValueError(f"no iso-surface at level {level} (values range {vol.min():.3g} .. {vol.max():.3g})")
    R = vol.shape[0]
    scale = 2.0 * bound / (R - 1) if R > 1 else 0.0
    verts = np.clip(-bound + (verts - 1.0) * scale, -bound, bound)  # -1: undo the padding offset

    mesh = trimesh.Trimesh(verts, faces, process=True)  # merges duplicate vertices
    mesh.update_faces(mesh.nondegenerate_faces(height=1e-10))
    mesh.remove_unreferenced_vertices()
    if keep_largest and len(mesh.faces) > 0:
        parts = mesh.split(only_watertight=False)
        if len(parts) > 1:
            mesh = max(parts, key=lambda m: len(m.faces))
    return TexturedMesh(
        vertices=torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32),
        faces=torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64),
    )
