"""Differentiable rendering of a mesh whose vertices are being optimised (Magic3D's refine stage, Lin et al. 2023,
Sec. 4: rasterise the DMTet surface, query the colour field at the surface points, shade, antialias).

Gradients reach the vertex positions through face interiors (``rasterize.differentiable_bary``: the surface points
fed to the colour field, the normals, the depth) and through silhouettes (``antialias.antialias``, applied to the
colour composited over the background and to the coverage). Shading is ``distill3d.shading``'s, like every renderer.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from distill3d import shading as shading_mod
from distill3d.cameras import Cameras, world_to_clip
from distill3d.mesh.antialias import antialias
from distill3d.mesh.nvdiff import nvdiffrast_available, rasterize_nvdiffrast
from distill3d.mesh.rasterize import Fragments, differentiable_bary, interpolate, rasterize
from distill3d.mesh.render import ray_length_per_unit_z, vertex_normals
from distill3d.mesh.topology import EdgeTopology

SHADINGS = ("albedo", "lambertian", "textureless", "normal")


def rasterize_backend(clip: torch.Tensor, faces: torch.Tensor, size: int, backend: str = "torch") -> Fragments:
    """Visibility by the torch rasteriser (``"torch"``, the tested path), by nvdiffrast (``"nvdiffrast"``, CUDA
    only, see ``nvdiff.py``) or by nvdiffrast when available else torch (``"auto"``)."""
    if backend not in ("torch", "nvdiffrast", "auto"):
        raise ValueError(f"unknown rasteriser backend {backend!r}")
    if backend == "nvdiffrast" or (backend == "auto" and nvdiffrast_available(clip.device) and faces.shape[0] > 0):
        return rasterize_nvdiffrast(clip, faces, size)
    return rasterize(clip.detach(), faces, size)


def render_surface(
    vertices: torch.Tensor, faces: torch.Tensor, cams: Cameras, size: int, *,
    albedo_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, shading: str = "albedo",
    light_dir: torch.Tensor | None = None, background: float | torch.Tensor = 1.0,
    ambient: float = shading_mod.DEFAULT_AMBIENT, topology: EdgeTopology | None = None, aa: bool = True,
    backend: str = "torch",
) -> dict[str, torch.Tensor]:
    """Render B views of the mesh (vertices (V, 3), may require grad; faces (F, 3), CCW seen from outside).

    albedo_fn: world points (N, 3) -> albedo (N, 3) in [0, 1], queried at the covered pixels' surface points (white
    when None); shading: "albedo", "lambertian" / "textureless" (``shading.lambertian`` / ``shading.textureless``
    with ``light_dir`` (B, 3) towards the light, default the headlight) or "normal" (the world normal map as colour
    (n + 1) / 2); background: a grey level or (B, 3); ``aa`` the silhouette antialiasing (off: hard edges, no
    silhouette gradients); topology: ``edge_topology(faces)`` when already known.
    Returns rgb (B, H, W, 3) composited over the background, opacity (B, H, W) antialiased coverage in [0, 1],
    normal (B, H, W, 3) world unit smooth normals (0 on background, not antialiased), depth (B, H, W) distance along
    the pixel's ray (0 on background). All differentiable w.r.t. ``vertices`` (and what ``albedo_fn`` depends on).
    """
    if shading not in SHADINGS:
        raise ValueError(f"unknown shading {shading!r}; expected one of {SHADINGS}")
    B, device = len(cams), cams.device
    faces = faces.to(device, torch.long)
    clip = world_to_clip(vertices, cams)
    frags = rasterize_backend(clip, faces, size, backend)
    bary = differentiable_bary(clip, faces, frags)
    mask = frags.mask
    normal = F.normalize(interpolate(vertex_normals(vertices, faces), frags, faces, bary=bary), dim=-1, eps=1e-12)

    if shading == "normal":
        colour = (normal + 1.0) * 0.5
    else:
        if shading == "textureless" or albedo_fn is None:
            albedo = torch.ones_like(normal)
        else:
            points = interpolate(vertices, frags, faces, bary=bary)[mask]
            albedo = normal.new_zeros(normal.shape).index_put((mask,), albedo_fn(points).to(normal.dtype))
        if shading == "albedo":
            colour = albedo
        else:
            light = shading_mod.headlight_directions(cams) if light_dir is None else light_dir.to(normal)
            light = light[:, None, None, :]
            colour = shading_mod.lambertian(albedo, normal, light, ambient) if shading == "lambertian" \
                else shading_mod.textureless(normal, light, ambient)
    if isinstance(background, torch.Tensor):
        bg = background.to(device, colour.dtype).reshape(-1, 1, 1, 3).expand(B, 1, 1, 3)
    else:
        bg = torch.full((B, 1, 1, 3), float(background), device=device, dtype=colour.dtype)
    m = mask[..., None].to(colour.dtype)
    rgb = colour * m + bg * (1.0 - m)
    opacity = mask.to(colour.dtype)
    if aa:
        blended = antialias(torch.cat([rgb, opacity[..., None]], dim=-1), frags, clip, faces, topology)
        rgb, opacity = blended[..., :3], blended[..., 3]
    w = interpolate(clip[..., 3:], frags, faces, bary=bary)[..., 0]  # camera z-depth
    depth = w * ray_length_per_unit_z(cams, size).to(w.dtype)
    return {"rgb": rgb, "opacity": opacity, "normal": normal * m, "depth": depth}
