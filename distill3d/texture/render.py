"""Differentiable texture rendering on a fixed mesh: rasterise once, then shade any texture many times.

The mesh does not move during texture fine-tuning, so the visibility, the interpolated uv and the normals of each
view are computed once (``FragmentCache``, no gradients) and every optimisation step only samples the texture
(``shade_texture``: bilinear ``grid_sample``, differentiable w.r.t. the texture) and shades it like ``render_mesh``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distill3d import shading
from distill3d.cameras import Cameras, world_to_clip
from distill3d.mesh.rasterize import interpolate, rasterize
from distill3d.mesh.render import sample_texture, vertex_normals
from distill3d.mesh.types import TexturedMesh


@dataclass
class FragmentCache:
    """Per-pixel surface data of B views at size * ssaa: uv (B, S, S, 2), normal (B, S, S, 3) unit world-space,
    mask (B, S, S) float, light (B, 3) headlight directions, ``ssaa`` (renders are average-pooled by it)."""

    uv: torch.Tensor
    normal: torch.Tensor
    mask: torch.Tensor
    light: torch.Tensor
    ssaa: int

    @classmethod
    @torch.no_grad()
    def build(cls, mesh: TexturedMesh, cams: Cameras, size: int, ssaa: int = 1) -> "FragmentCache":
        if mesh.uv is None:
            raise ValueError("texture rendering needs a mesh with uv (see distill3d.mesh.uv.unwrap)")
        mesh = mesh.to(cams.device)
        faces = mesh.faces.long()
        frags = rasterize(world_to_clip(mesh.vertices.float(), cams), faces, size * ssaa)
        uv = interpolate(mesh.uv.float(), frags, faces)
        nrm = F.normalize(interpolate(vertex_normals(mesh.vertices.float(), faces), frags, faces), dim=-1, eps=1e-12)
        return cls(uv=uv, normal=nrm, mask=frags.mask.float(), light=shading.headlight_directions(cams), ssaa=ssaa)

    def __len__(self) -> int:
        return self.uv.shape[0]

    def select(self, idx: torch.Tensor | list[int]) -> "FragmentCache":
        return FragmentCache(self.uv[idx], self.normal[idx], self.mask[idx], self.light[idx], self.ssaa)


def shade_texture(texture: torch.Tensor, cache: FragmentCache, mode: str = "shaded",
                  background: float | torch.Tensor = 1.0) -> dict[str, torch.Tensor]:
    """Render ``texture`` (Ht, Wt, 3) in [0, 1] on the cached views -> rgb (B, H, W, 3), mask (B, H, W).

    mode "shaded": Lambertian with the headlight (``shading.lambertian``, as ``render_mesh``); "albedo": the texture.
    Differentiable w.r.t. ``texture``.
    """
    albedo = sample_texture(texture, cache.uv)
    if mode == "shaded":
        rgb = shading.lambertian(albedo, cache.normal, cache.light[:, None, None, :])
    elif mode == "albedo":
        rgb = albedo
    else:
        raise ValueError(f"unknown mode {mode!r}")
    m = cache.mask[..., None]
    rgb = rgb * m + background * (1.0 - m)
    mask = cache.mask
    if cache.ssaa > 1:
        rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), cache.ssaa).permute(0, 2, 3, 1)
        mask = F.avg_pool2d(mask[:, None], cache.ssaa)[:, 0]
    return {"rgb": rgb, "mask": mask}
