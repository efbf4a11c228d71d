"""What a person looks at for an asset: a turntable GIF and a PNG grid of views (shaded and albedo rows)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from distill3d.cameras import ring_cameras
from distill3d.mesh.render import render_mesh
from distill3d.mesh.types import TexturedMesh
from distill3d.viz.grid import save_grid
from distill3d.viz.turntable import save_turntable, turntable_frames


@torch.no_grad()
def save_asset_views(
    mesh: TexturedMesh, out: Path, n_frames: int = 36, frame_size: int = 128, fps: float = 12.0,
    n_views: int = 8, views_size: int = 128, elevation: float = 15.0, ssaa: int = 2,
) -> None:
    """Write ``out/turntable.gif`` and ``out/views.png`` for ``mesh``."""
    frames = turntable_frames(partial(render_mesh, mesh, mode="shaded", ssaa=ssaa), n_frames, elevation, frame_size)
    save_turntable(frames, Path(out) / "turntable.gif", fps=fps)
    cams = ring_cameras(n_views, elevation)
    rows = [render_mesh(mesh, cams, views_size, mode=m, ssaa=ssaa)["rgb"] for m in ("shaded", "albedo")]
    save_grid(torch.cat(rows), Path(out) / "views.png", ncols=n_views)
