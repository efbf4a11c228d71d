"""Initialise a DMTet grid and SDF from a coarse density field (Magic3D's coarse-to-fine hand-off, Lin et al. 2023,
Sec. 4: the fine stage's SDF is initialised from the coarse density field).

Steps: sample the density on a regular grid; pick the iso-level (``level.choose_level``: the level whose
marching-cubes mesh best matches the field's own rendered opacity silhouettes -- no hand-set threshold, the top
failure of threestudio's refine stage -- or a given one); mesh it (largest component, so floaters are dropped); put
the tet grid in that mesh's tight box plus a margin, with cube cells; and set the SDF at the grid vertices:

* ``"distance"`` (default): the signed Euclidean distance to that mesh (pysdf). Its crossings reproduce the mesh on
  the grid, and its unit gradient gives the SDF learning rate a meaning in world units (lr 1e-2 moves the surface by
  about 0.01 per step).
* ``"density"``: threestudio's recipe clamp(-(density - level), -1, 1), divided by the level here so that the
  clamp does not flatten the crossings: clamp((level - density) / level, -1, 1). Keeps floaters.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field as dc_field

import torch
from torch import nn

from distill3d.mesh.extract import extract_isosurface, sample_grid
from distill3d.mesh.marching_tets import marching_tets
from distill3d.mesh.tetra import TetGrid, tet_grid


class EmptySurfaceError(ValueError):
    """The DMTet surface is empty (at the initial level, or after the SDF lost every sign change). Its message is one
    line; ``level`` and ``value_range`` (min, max of the sampled densities) are set when known."""

    def __init__(self, message: str, level: float | None = None, value_range: tuple[float, float] | None = None):
        super().__init__(message)
        self.level, self.value_range = level, value_range


@dataclass
class DMTetInit:
    """How to build the grid and SDF from a coarse density field.

    resolution: cube cells along the box's longest side (the other sides get as many cells of the same size as
    they need); margin: added to each side of the tight box, as a fraction of its extent (Magic3D / threestudio:
    10%); level: a density iso-level or "auto" (``candidate_levels``, matched over ``match_views`` ring views at
    ``match_size`` pixels); sample_resolution: the density grid for level choice and the box; sdf: "distance" or
    "density" (module docstring).
    """

    resolution: int = 32
    margin: float = 0.1
    level: float | str = "auto"
    candidate_levels: list[float] = dc_field(default_factory=lambda: [2.0, 5.0, 10.0, 20.0, 40.0])
    sample_resolution: int = 64
    match_views: int = 8
    match_size: int = 64
    sdf: str = "distance"


def box_grid(lo: torch.Tensor, hi: torch.Tensor, resolution: int, margin: float) -> TetGrid:
    """A tet grid of cube cells around the box [lo, hi] ((3,) each) grown by ``margin`` x extent on each side,
    ``resolution`` cells along the longest side."""
    ext = (hi - lo).clamp_min(1e-6) * (1.0 + 2.0 * margin)
    cell = float(ext.max()) / resolution
    n = [max(1, math.ceil(float(e) / cell - 1e-6)) for e in ext]
    centre = (lo + hi) / 2
    half = torch.tensor(n, dtype=torch.float32) * cell / 2
    return tet_grid(tuple(n), centre - half, centre + half)


@torch.no_grad()
def init_from_field(field: nn.Module, cfg: DMTetInit = DMTetInit()) -> tuple[TetGrid, torch.Tensor, dict]:
    """Grid and initial SDF from ``field`` (anything with ``bound`` and ``density`` (N, 3) -> (N,), e.g. a
    ``RadianceField``; "auto" also renders it, so it needs ``query``). Runs on CPU (a copy of a CUDA field).

    Returns the ``TetGrid``, sdf (N,) (negative inside) and info {level, candidate_iou, box_min, box_max,
    resolution (cells per axis), init_faces}. Raises ``EmptySurfaceError`` when no surface exists at the level, or
    when the surface is thinner than a grid cell.
    """
    from distill3d.mesh.level import choose_level

    if cfg.sdf not in ("distance", "density"):
        raise ValueError(f"sdf must be 'distance' or 'density', got {cfg.sdf!r}")
    if _device_of(field).type != "cpu":
        field = copy.deepcopy(field).cpu()
    bound = float(field.bound)
    values = sample_grid(field.density, cfg.sample_resolution, bound)
    vrange = (float(values.min()), float(values.max()))
    scores: dict[str, float] = {}
    if cfg.level == "auto":
        try:
            level, scores = choose_level(field, values, list(cfg.candidate_levels), cfg.match_views, cfg.match_size)
        except ValueError as e:
            raise EmptySurfaceError(f"no surface at any candidate density level {list(cfg.candidate_levels)} "
                                    f"(densities {vrange[0]:.3g} .. {vrange[1]:.3g}): {e}", None, vrange) from e
    else:
        level = float(cfg.level)
    try:
        mesh = extract_isosurface(values, level, bound=bound, inside="above", keep_largest=True)
    except ValueError as e:
        raise EmptySurfaceError(f"no surface at density level {level:g}: the coarse field's densities on a "
                                f"{cfg.sample_resolution}^3 grid span {vrange[0]:.3g} .. {vrange[1]:.3g}",
                                level, vrange) from e
    lo, hi = mesh.vertices.amin(0), mesh.vertices.amax(0)
    grid = box_grid(lo, hi, cfg.resolution, cfg.margin)
    if cfg.sdf == "distance":
        from distill3d.fields.sdf_init import mesh_signed_distance

        sdf = mesh_signed_distance(mesh)(grid.vertices)
    else:
        dens = torch.cat([field.density(c).float() for c in grid.vertices.split(65536)])
        sdf = ((level - dens) / max(abs(level), 1e-6)).clamp(-1.0, 1.0)
    # Grid vertices lying exactly on the surface would give zero-area faces: nudge them outside.
    tiny = 1e-4 * float(grid.cell_size.min())
    sdf = torch.where(sdf.abs() < tiny, torch.full_like(sdf, tiny), sdf)
    sdf = torch.where(grid.boundary, sdf.clamp_min(1e-6), sdf)
    _, faces = marching_tets(grid.vertices, sdf, grid.tets)
    if faces.shape[0] == 0:
        raise EmptySurfaceError(f"the surface at density level {level:g} is thinner than a grid cell "
                                f"({float(grid.cell_size.max()):.3g}): raise the resolution or lower the level",
                                level, vrange)
    info = {"level": level, "candidate_iou": scores, "box_min": grid.bbox[0].tolist(),
            "box_max": grid.bbox[1].tolist(), "resolution": list(grid.resolution), "init_faces": int(faces.shape[0])}
    return grid, sdf, info


def _device_of(module: nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
