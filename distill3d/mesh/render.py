"""Render a ``TexturedMesh`` with ``Cameras`` through the torch rasteriser, shaded like every other renderer.

Texture convention (shared with ``uv.py`` and ``gltf.py``): uv (0, 0) is the bottom-left corner of the texture image,
v points up, texture row 0 is the *top* of the image (v = 1), and texel (row r, col c) has its centre at
u = (c + 0.5) / W, v = 1 - (r + 0.5) / H -- i.e. ``grid_sample`` with ``align_corners=False``. glTF's t axis points
down, so glTF t = 1 - v (trimesh does the flip on export and import).

Gradients flow to texture, vertex colours and per-vertex attributes (not to vertex positions: visibility is discrete;
see ``rasterize.differentiable_bary``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from distill3d import shading
from distill3d.cameras import Cameras, focal_pixels, world_to_clip
from distill3d.mesh.rasterize import interpolate, rasterize
from distill3d.mesh.types import TexturedMesh


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(V, 3) unit smooth normals: the area-weighted sum of adjacent face normals (faces CCW seen from outside)."""
    v = vertices[faces]  # (F, 3, 3)
    fn = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)  # length = 2 * area
    n = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, dim=0))
    return F.normalize(n, dim=-1, eps=1e-12)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup. texture (Ht, Wt, C), uv (..., 2) (v up, see module docstring) -> (..., C); clamps at borders."""
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], dim=-1).reshape(1, 1, -1, 2)
    img = texture.permute(2, 0, 1)[None].to(grid.dtype)  # (1, C, Ht, Wt)
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T.reshape(*uv.shape[:-1], texture.shape[-1])


def mesh_albedo(mesh: TexturedMesh, frags, faces: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) albedo: the UV texture if present, else vertex colours, else white."""
    if mesh.has_uv_texture:
        uv = interpolate(mesh.uv, frags, faces)
        return sample_texture(mesh.texture, uv)
    if mesh.vertex_colors is not None:
        return interpolate(mesh.vertex_colors, frags, faces)
    return torch.ones(*frags.face_id.shape, 3, device=faces.device)


def ray_length_per_unit_z(cams: Cameras, size: int) -> torch.Tensor:
    """(B, H, W) ray distance per unit of camera z-depth at each pixel centre: |(x/f, y/f, 1)|."""
    idx = (torch.arange(size, device=cams.device, dtype=torch.float32) + 0.5 - size / 2)
    f = focal_pixels(cams.fov, size)[:, None, None]
    return torch.sqrt(1.0 + (idx[None, :, None] / f) ** 2 + (idx[None, None, :] / f) ** 2)


def render_mesh(
    mesh: TexturedMesh, cams: Cameras, size: int, mode: Literal["shaded", "albedo", "textureless"] = "shaded",
    light_dir: torch.Tensor | None = None, background: float = 1.0, ssaa: int = 1,
) -> dict[str, torch.Tensor]:
    """Render B views of ``mesh`` (moved to ``cams.device``) at size x size.

    ``light_dir`` (B, 3) unit vectors towards the light (default ``shading.headlight_directions(cams)``);
    ``ssaa`` renders at size * ssaa and average-pools (mask, colour and normal become area averages).
    Returns rgb (B, H, W, 3) composited over ``background``; mask (B, H, W) float coverage in [0, 1];
    depth (B, H, W) distance along the pixel's ray (as the sphere tracer and volume renderer report it; mean over
    covered sub-pixels, 0 on background);
    normal (B, H, W, 3) world-space unit smooth normals (0 on background).
    """
    if mode not in ("shaded", "albedo", "textureless"):
        raise ValueError(f"unknown mode {mode!r}")
    mesh = mesh.to(cams.device)
    faces = mesh.faces.long()
    S = size * ssaa
    frags = rasterize(world_to_clip(mesh.vertices.float(), cams), faces, S)
    mask = frags.mask.float()
    normal = F.normalize(interpolate(vertex_normals(mesh.vertices.float(), faces), frags, faces), dim=-1, eps=1e-12)

    if mode == "textureless":
        albedo = torch.ones_like(normal)
    else:
        albedo = mesh_albedo(mesh, frags, faces)
    if mode == "albedo":
        rgb = albedo
    else:
        light = shading.headlight_directions(cams) if light_dir is None else light_dir.to(normal)
        rgb = shading.lambertian(albedo, normal, light[:, None, None, :])
    rgb = rgb * mask[..., None] + background * (1.0 - mask[..., None])

    depth = frags.depth.to(rgb.dtype) * ray_length_per_unit_z(cams, S)
    if ssaa > 1:
        def pool(x: torch.Tensor) -> torch.Tensor:  # (B, S, S, C) -> (B, size, size, C)
            return F.avg_pool2d(x.permute(0, 3, 1, 2), ssaa).permute(0, 2, 3, 1)

        rgb = pool(rgb)
        mask_hi = mask
        mask = pool(mask_hi[..., None])[..., 0]
        depth = pool((depth * mask_hi)[..., None])[..., 0] / mask.clamp_min(1e-8)
        normal = F.normalize(pool(normal), dim=-1, eps=1e-12)
    return {"rgb": rgb, "mask": mask, "depth": depth, "normal": normal}
