"""UV unwrapping (xatlas) and texture baking by rasterising the mesh in UV space with ``rasterize``.

Texture convention: see ``distill3d.mesh.render`` (v up, texture row 0 = top, texel centres at (c + .5) / W).
In UV space the rasteriser's pixel mapping col = (x + 1) / 2 * S, row = (1 - y) / 2 * S with clip = (2u - 1, 2v - 1,
0, 1) puts texel (r, c) exactly where ``sample_texture`` reads it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import xatlas
from scipy import ndimage

from distill3d.mesh.rasterize import interpolate, rasterize
from distill3d.mesh.simplify import simplify
from distill3d.mesh.types import TexturedMesh


def unwrap(mesh: TexturedMesh, resolution: int = 512, padding: int = 2) -> TexturedMesh:
    """Chart and pack a UV atlas with xatlas. Vertices are split along seams (positions and vertex colours copied),
    faces keep their order; uv (V', 2) in [0, 1]. ``resolution``/``padding`` (texels) let xatlas leave gutters between
    charts for a texture of about that size. The input's texture, if any, is dropped (its uv no longer apply)."""
    atlas = xatlas.Atlas()
    atlas.add_mesh(
        mesh.vertices.detach().cpu().numpy().astype(np.float32), mesh.faces.cpu().numpy().astype(np.uint32)
    )
    pack = xatlas.PackOptions()
    pack.resolution = resolution
    pack.padding = padding
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    if atlas.atlas_count != 1:  # charts did not fit one page: fall back to xatlas' automatic scale
        vmapping, indices, uvs = xatlas.parametrize(
            mesh.vertices.detach().cpu().numpy(), mesh.faces.cpu().numpy().astype(np.uint32)
        )
    else:
        vmapping, indices, uvs = atlas[0]
    device = mesh.vertices.device
    vmap = torch.as_tensor(vmapping.astype(np.int64), device=device)
    return TexturedMesh(
        vertices=mesh.vertices[vmap],
        faces=torch.as_tensor(indices.astype(np.int64), device=device),
        uv=torch.as_tensor(uvs, dtype=torch.float32, device=device).clamp(0.0, 1.0),
        vertex_colors=None if mesh.vertex_colors is None else mesh.vertex_colors[vmap],
    )


def uv_clip(uv: torch.Tensor) -> torch.Tensor:
    """(V, 2) uv -> (1, V, 4) clip coordinates of the UV-space 'camera' (w = 1, so no perspective)."""
    return torch.cat([uv * 2 - 1, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], dim=-1)[None]


def dilate_texture(texture: np.ndarray, filled: np.ndarray, padding: int) -> np.ndarray:
    """Copy each unfilled texel within ``padding`` texels of a filled one from its nearest filled texel (so bilinear
    lookups at chart borders never read background); the rest get the mean filled colour. (H, W, C), (H, W) bool."""
    if not filled.any():
        return texture
    dist, (ri, ci) = ndimage.distance_transform_edt(~filled, return_indices=True)
    out = np.where(filled[..., None], texture, texture[filled].mean(0))
    near = (~filled) & (dist <= padding)
    out[near] = texture[ri[near], ci[near]]
    return out


@torch.no_grad()
def bake_texture(
    mesh: TexturedMesh, colour_fn: Callable[[torch.Tensor], torch.Tensor], size: int = 512, padding: int = 4,
    chunk: int = 65536,
) -> TexturedMesh:
    """Fill a size x size texture for ``mesh`` (which must have uv, e.g. from ``unwrap``).

    Each texel whose centre lies inside a face in UV space gets ``colour_fn`` ((N, 3) world points -> (N, 3) rgb in
    [0, 1], called ``chunk`` points at a time on the mesh's device) at the matching surface point; empty texels are
    dilated ``padding`` texels out from the charts. Returns a copy of ``mesh`` with ``texture`` (size, size, 3).
    """
    if mesh.uv is None:
        raise ValueError("bake_texture needs a mesh with uv (see unwrap)")
    faces = mesh.faces.long()
    frags = rasterize(uv_clip(mesh.uv.float()), faces, size)
    points = interpolate(mesh.vertices.float(), frags, faces)[0]  # (S, S, 3) world position per texel
    filled = frags.mask[0]
    pts = points[filled]
    colours = torch.cat([colour_fn(pts[s : s + chunk]).float() for s in range(0, len(pts), chunk)] or [pts[:0]])
    texture = torch.zeros(size, size, 3, device=points.device)
    texture[filled] = colours.clamp(0.0, 1.0)
    tex = dilate_texture(texture.cpu().numpy(), filled.cpu().numpy(), padding)
    return TexturedMesh(
        vertices=mesh.vertices, faces=mesh.faces, uv=mesh.uv,
        texture=torch.as_tensor(tex, dtype=torch.float32, device=mesh.vertices.device),
        vertex_colors=mesh.vertex_colors,
    )


@torch.no_grad()
def ensure_texture(
    mesh: TexturedMesh, colour_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, size: int = 512,
    max_faces: int | None = None,
) -> TexturedMesh:
    """``mesh`` with uv + texture: as it is if it has them, else xatlas-unwrapped and baked from ``colour_fn``
    (e.g. a field's albedo), or from its own vertex colours (nearest vertex), or plain white. ``max_faces``: first
    simplify the mesh to at most that many faces (``mesh.simplify``: unwrapping time grows fast with faces)."""
    if mesh.has_uv_texture:
        return mesh
    if colour_fn is None and mesh.vertex_colors is not None:
        verts, cols = mesh.vertices.float(), mesh.vertex_colors.float()

        def colour_fn(p: torch.Tensor) -> torch.Tensor:
            return cols[torch.cdist(p, verts).argmin(dim=1)]
    elif colour_fn is None:
        def colour_fn(p: torch.Tensor) -> torch.Tensor:
            return torch.ones_like(p)
    if max_faces is not None:
        mesh = simplify(mesh, max_faces)
    return bake_texture(unwrap(mesh, resolution=size), colour_fn, size=size)
