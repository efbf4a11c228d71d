"""Choose a density iso-level for mesh extraction from the field's own renders (no hand-tuned threshold)."""

from __future__ import annotations

import torch
from torch import nn

from distill3d.cameras import ring_cameras
from distill3d.mesh.extract import extract_isosurface
from distill3d.mesh.render import render_mesh
from distill3d.metrics.silhouette import iou
from distill3d.render.volume import render_field


@torch.no_grad()
def choose_level(
    field: nn.Module, values: torch.Tensor, candidates: list[float], n_views: int = 8, size: int = 64,
    elevation: float = 15.0,
) -> tuple[float, dict[str, float]]:
    """The candidate density level whose marching-cubes mesh has silhouettes closest (mean IoU) to the field's
    rendered opacity over a ring of views (plus top and bottom).

    values: (R, R, R) densities sampled on the field's bound. Returns (level, {str(level): mean IoU}).
    """
    cams = ring_cameras(n_views, elevation, with_top_bottom=True)
    target = render_field(field, cams, size, stratified=False)["opacity"]
    scores: dict[str, float] = {}
    for level in candidates:
        try:
            mesh = extract_isosurface(values, level, bound=field.bound, inside="above", keep_largest=True)
        except ValueError:  # nothing above this level
            scores[str(level)] = 0.0
            continue
        scores[str(level)] = float(iou(render_mesh(mesh, cams, size, mode="albedo")["mask"], target).mean())
    best = max(scores, key=scores.get)
    if scores[best] == 0.0:
        raise ValueError("the field is empty at every candidate level: the optimisation produced no object")
    return float(best), scores
