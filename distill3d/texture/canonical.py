"""TextMesh's canonical views (Sec. 3.3): front, right, back and left at one elevation, tiled 2x2 into one image.

Azimuths follow ``distill3d.cameras``: 0 = camera on +Z (front), 90 = on +X ("right": the camera is to the
object's right-hand side as seen from the front), 180 = back, 270 = left. Tile layout (row-major):

    [ front | right ]
    [ back  | left  ]
"""

from __future__ import annotations

import torch

from distill3d.cameras import Cameras, spherical_cameras
from distill3d.mesh.types import TexturedMesh

CANONICAL_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
CANONICAL_NAMES = ("front", "right", "back", "left")


def canonical_cameras(elevation: float = 15.0, radius: float = 2.6, fov: float = 40.0,
                      device: torch.device | str = "cpu") -> Cameras:
    """The 4 canonical cameras (front, right, back, left) at ``elevation`` degrees."""
    return spherical_cameras(list(CANONICAL_AZIMUTHS), [elevation] * 4, radius, fov, device=device)


def tile_2x2(images: torch.Tensor) -> torch.Tensor:
    """(4, H, W, ...) -> (2H, 2W, ...): [[0, 1], [2, 3]]."""
    if images.shape[0] != 4:
        raise ValueError(f"tile_2x2 needs 4 images, got {images.shape[0]}")
    top = torch.cat([images[0], images[1]], dim=1)
    bottom = torch.cat([images[2], images[3]], dim=1)
    return torch.cat([top, bottom], dim=0)


def untile_2x2(tile: torch.Tensor) -> torch.Tensor:
    """(2H, 2W, ...) -> (4, H, W, ...), the inverse of ``tile_2x2``."""
    H, W = tile.shape[0] // 2, tile.shape[1] // 2
    return torch.stack([tile[:H, :W], tile[:H, W:], tile[H:, :W], tile[H:, W:]])


@torch.no_grad()
def render_views(mesh: TexturedMesh, cams: Cameras, size: int, ssaa: int = 2, background: float = 1.0) -> dict:
    """Shaded (headlight, as the toy prior's training images) and albedo renders of ``mesh`` with its current
    texture: rgb (B, H, W, 3), albedo (B, H, W, 3), mask (B, H, W) coverage, depth (B, H, W) (0 on background)."""
    from distill3d.mesh.render import render_mesh

    shaded = render_mesh(mesh, cams, size, mode="shaded", background=background, ssaa=ssaa)
    albedo = render_mesh(mesh, cams, size, mode="albedo", background=background, ssaa=ssaa)["rgb"]
    return {"rgb": shaded["rgb"], "albedo": albedo, "mask": shaded["mask"], "depth": shaded["depth"]}
