"""Shading shared by every renderer (ground truth, radiance fields, meshes), so the prior sees one lighting model.

Lambertian with ambient term (DreamFusion 3.1): c = albedo * (ambient + (1 - ambient) * max(0, n . l)).
The default light is a "headlight": it comes from the camera, raised and turned a little, so every view of an
object is lit alike; DreamFusion's random point light around the camera is ``random_light_directions``.
"""

from __future__ import annotations

import torch

from distill3d.cameras import Cameras

DEFAULT_AMBIENT = 0.4


def headlight_directions(cams: Cameras) -> torch.Tensor:
    """(B, 3) unit directions *towards* the light: from the camera, offset up and to the camera's left."""
    c2w = cams.c2w
    d = c2w[:, :3, 2] + 0.5 * c2w[:, :3, 1] - 0.3 * c2w[:, :3, 0]  # backwards(+Z cam) = towards camera
    return d / d.norm(dim=-1, keepdim=True)


def random_light_directions(cams: Cameras, spread_deg: float = 45.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 3) light directions sampled around the camera direction within ``spread_deg`` (DreamFusion 3.2)."""
    base = cams.position / cams.position.norm(dim=-1, keepdim=True)
    noise = torch.randn(base.shape, generator=generator).to(base.device)
    noise = noise - (noise * base).sum(-1, keepdim=True) * base
    noise = noise / noise.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    angle = torch.deg2rad(torch.rand(base.shape[0], 1, generator=generator).to(base.device) * spread_deg)
    d = torch.cos(angle) * base + torch.sin(angle) * noise
    return d / d.norm(dim=-1, keepdim=True)


def lambertian(albedo: torch.Tensor, normals: torch.Tensor, light_dir: torch.Tensor, ambient: float = DEFAULT_AMBIENT) -> torch.Tensor:
    """albedo (..., 3), unit normals (..., 3), light_dir broadcastable to (..., 3) -> shaded colour (..., 3)."""
    diffuse = (normals * light_dir).sum(-1, keepdim=True).clamp_min(0.0)
    return albedo * (ambient + (1.0 - ambient) * diffuse)


def textureless(normals: torch.Tensor, light_dir: torch.Tensor, ambient: float = DEFAULT_AMBIENT) -> torch.Tensor:
    """DreamFusion's textureless shading: Lambertian with a white albedo."""
    return lambertian(torch.ones_like(normals), normals, light_dir, ambient)
