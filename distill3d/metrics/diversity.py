"""Diversity of several results of one prompt (ProlificDreamer's particles, or SDS runs with different seeds): how
different they look from the same cameras."""

from __future__ import annotations

import itertools

import torch

from distill3d.cameras import ring_cameras
from distill3d.mesh.render import render_mesh
from distill3d.mesh.types import TexturedMesh


@torch.no_grad()
def render_distance(a: TexturedMesh, b: TexturedMesh, size: int = 64, n_ring: int = 8) -> float:
    """Mean absolute difference (in [0, 1]) of two meshes' albedo renders over a ring of views plus top and
    bottom, on white: 0 for identical-looking results, larger for different shape, colour or pattern."""
    cams = ring_cameras(n_ring, with_top_bottom=True)
    ra = render_mesh(a, cams, size, mode="albedo")["rgb"]
    rb = render_mesh(b, cams, size, mode="albedo")["rgb"]
    return float((ra - rb).abs().mean())


def mean_pairwise_distance(meshes: list[TexturedMesh], size: int = 64, n_ring: int = 8) -> float | None:
    """Mean ``render_distance`` over all pairs (None for fewer than two)."""
    pairs = list(itertools.combinations(meshes, 2))
    if not pairs:
        return None
    return sum(render_distance(a, b, size, n_ring) for a, b in pairs) / len(pairs)
