"""A triangle rasteriser in plain torch (CPU and CUDA): face ids, barycentrics, depth, attribute interpolation.

Written by hand because kaolin / nvdiffrast / pytorch3d cannot be installed here (no CUDA toolkit, no wheels for this
torch); everything is vectorised torch, so the same code runs on CPU and CUDA.

Conventions (``distill3d.cameras``): clip coordinates come from ``world_to_clip``; NDC = clip.xyz / clip.w with x right
and y up; a size-S image has pixel (row i, col j) centred at col = j + 0.5, row = i + 0.5 and

    col = (x_ndc + 1) / 2 * S,        row = (1 - y_ndc) / 2 * S        (row 0 is the top),

so a pixel sees exactly what ``camera_rays`` shoots through it. A pixel is covered by a face when its *centre* lies
inside the projected triangle (edges inclusive); among covering faces the nearest (smallest camera depth) wins, ties
going to the smaller face id. Faces with any vertex at w <= ``eps_w`` (on or behind the camera plane) are culled
whole; there is no near/far clipping otherwise (distill3d's cameras always sit outside the object).

Algorithm (no per-face Python loop): every face enumerates the pixel centres of its screen bounding box
(``repeat_interleave`` over per-face pixel counts, processed in chunks of at most ``chunk`` candidates to bound
memory), tests them with edge functions, and the visible face per pixel is the ``scatter_reduce(amin)`` of a packed
int64 key ``(depth float bits << 32) | face id`` -- positive float32 bit patterns sort like the floats, so one integer
minimum gives the nearest face. Barycentrics are then recomputed only for the winning face of each pixel.

Differentiability: visibility (which face a pixel sees) is discrete and chosen without gradients. ``interpolate`` is
differentiable w.r.t. the attributes; ``differentiable_bary`` recomputes the winning faces' barycentrics from the clip
coordinates with autograd, so gradients can flow to vertex positions through the interior of faces. Silhouette
(visibility) gradients come from the separate antialiasing pass, ``distill3d.mesh.antialias.antialias``, applied to
an image made from these fragments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_NO_HIT = torch.iinfo(torch.int64).max


@dataclass
class Fragments:
    """Per-pixel rasterisation result for B images of H = W = size.

    face_id (B, H, W) int64, index into ``faces`` of the visible face, -1 for background;
    bary (B, H, W, 3) perspective-correct barycentric weights of the face's three vertices (0 for background);
    depth (B, H, W) camera-space z-depth of the surface = clip w = distance along the camera's viewing axis
    (not the distance along the ray), 0 for background.
    """

    face_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool, True where a face is visible."""
        return self.face_id >= 0

    @property
    def size(self) -> int:
        return self.face_id.shape[-1]


def clip_to_pixels(clip: torch.Tensor, size: int, eps_w: float = 1e-6) -> torch.Tensor:
    """(..., 4) clip coordinates -> (..., 2) continuous pixel coordinates (col, row).

    Points with w <= eps_w are divided by eps_w instead (their faces are culled anyway)."""
    w = clip[..., 3].clamp_min(eps_w)
    col = (clip[..., 0] / w + 1.0) * (0.5 * size)
    row = (1.0 - clip[..., 1] / w) * (0.5 * size)
    return torch.stack([col, row], dim=-1)


def _edge_bary(tri: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Screen-space (affine) barycentrics. tri (N, 3, 2) vertices, p (N, 2) points -> (N, 3), summing to 1.

    l0 = cross(v2 - v1, p - v1) / A etc., with A = cross(v1 - v0, v2 - v0) the doubled signed area, so the weights
    are the signed sub-triangle areas and do not depend on the winding; all >= 0 exactly when p is inside.
    """

    def cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]

    v0, v1, v2 = tri.unbind(-2)
    area = cross(v1 - v0, v2 - v0)
    l0 = cross(v2 - v1, p - v1)
    l1 = cross(v0 - v2, p - v2)
    l2 = cross(v1 - v0, p - v0)
    return torch.stack([l0, l1, l2], dim=-1) / area[..., None]


def _perspective_correct(lam: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen-space barycentrics lam (N, 3) and vertex clip w (N, 3) -> (perspective-correct bary (N, 3), depth (N,)).

    1/w is affine in screen space, so depth = 1 / sum(lam_i / w_i) and the 3D barycentrics are lam_i / w_i * depth.
    """
    q = lam / w
    depth = 1.0 / q.sum(-1)
    return q * depth[..., None], depth


@torch.no_grad()
def rasterize(
    clip: torch.Tensor, faces: torch.Tensor, size: int, chunk: int = 1 << 20, eps_w: float = 1e-6,
    cull_backfaces: bool = False,
) -> Fragments:
    """Rasterise a batch of views of one mesh.

    clip (B, V, 4) clip coordinates (``cameras.world_to_clip``), faces (F, 3) int64, size = image side S.
    ``chunk`` bounds the number of (face, pixel) candidates processed at once (peak memory ~ 200 bytes per
    candidate, so ~200 MB at the default).
    ``cull_backfaces`` drops faces that are clockwise on screen (faces are counter-clockwise seen from outside).
    Returns ``Fragments`` with (B, S, S) tensors; no gradients (see ``differentiable_bary``).
    """
    if clip.dim() != 3 or clip.shape[-1] != 4:
        raise ValueError(f"clip must be (B, V, 4), got {tuple(clip.shape)}")
    B, device = clip.shape[0], clip.device
    faces = faces.to(device=device, dtype=torch.long)
    F = faces.shape[0]
    best = torch.full((B * size * size,), _NO_HIT, dtype=torch.int64, device=device)

    if F > 0:
        tri_w = clip[..., 3][:, faces]  # (B, F, 3)
        tri = clip_to_pixels(clip, size, eps_w)[:, faces]  # (B, F, 3, 2)
        e0, e1 = tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]
        area = e0[..., 0] * e1[..., 1] - e0[..., 1] * e1[..., 0]  # doubled signed area, pixels^2
        valid = (tri_w > eps_w).all(-1) & (area.abs() > 1e-12)
        if cull_backfaces:
            # Rows grow downwards, so a face that is counter-clockwise in NDC (y up) has negative pixel-space area.
            valid &= area < 0
        # Pixel j is a candidate when its centre j + 0.5 lies in [min, max] of the face's extent.
        # Clamp first: faces close to the camera plane have enormous coordinates.
        # Elementwise min/max of the three corners (a reduction over the size-3 dim is several times slower on CPU).
        tmin = torch.minimum(torch.minimum(tri[:, :, 0], tri[:, :, 1]), tri[:, :, 2])
        tmax = torch.maximum(torch.maximum(tri[:, :, 0], tri[:, :, 1]), tri[:, :, 2])
        lo = (tmin.clamp(-1.0, size + 1.0) - 0.5).ceil().long().clamp_min(0)  # (B, F, 2) (col, row)
        hi = (tmax.clamp(-1.0, size + 1.0) - 0.5).floor().long().clamp_max(size - 1)
        extent = (hi - lo + 1).clamp_min(0)
        count = extent[..., 0] * extent[..., 1] * valid  # (B, F)

        inst = count.reshape(-1).nonzero().squeeze(1)  # face instances (b * F + f) covering any pixel centre
        counts = count.reshape(-1)[inst]
        ends = counts.cumsum(0)
        # Split the instance list into chunks of about `chunk` candidates (a huge face forms a chunk of its own).
        total = int(ends[-1]) if len(ends) else 0
        cuts = torch.searchsorted(ends, torch.arange(chunk, max(total, chunk), chunk, device=device)).tolist()
        bounds = [0] + sorted(set(c + 1 for c in cuts)) + [len(inst)]
        tri_f, w_f = tri.reshape(-1, 3, 2), tri_w.reshape(-1, 3)
        lo_f, nx_f = lo.reshape(-1, 2), extent[..., 0].reshape(-1)
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b <= a:
                continue
            ids, c = inst[a:b], counts[a:b]
            n = int(c.sum())
            rep = torch.repeat_interleave(torch.arange(b - a, device=device), c, output_size=n)
            local = torch.arange(n, device=device) - (c.cumsum(0) - c)[rep]
            nx = nx_f[ids][rep]
            lo_c = lo_f[ids][rep]
            px = lo_c[:, 0] + local % nx
            py = lo_c[:, 1] + torch.div(local, nx, rounding_mode="floor")
            centre = torch.stack([px, py], dim=-1).to(tri.dtype) + 0.5
            lam = _edge_bary(tri_f[ids][rep], centre)
            inside = (lam >= 0).all(-1)
            inst_in = ids[rep][inside]
            _, depth = _perspective_correct(lam[inside], w_f[inst_in])
            b_idx, f_idx = torch.div(inst_in, F, rounding_mode="floor"), inst_in % F
            pix = (b_idx * size + py[inside]) * size + px[inside]
            key = (depth.float().view(torch.int32).long() << 32) | f_idx
            best.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)

    face_id = torch.where(best == _NO_HIT, -1, best & 0xFFFFFFFF).reshape(B, size, size)
    return fragments_from_face_ids(clip, faces, face_id)


def fragments_from_face_ids(clip: torch.Tensor, faces: torch.Tensor, face_id: torch.Tensor) -> Fragments:
    """``Fragments`` (no gradients) from a visibility image made elsewhere (e.g. by nvdiffrast): clip (B, V, 4),
    faces (F, 3), face_id (B, H, W) int64 (-1 background)."""
    with torch.no_grad():
        bary, depth = _winner_bary(clip, faces.to(clip.device, torch.long), face_id)
    return Fragments(face_id=face_id, bary=bary, depth=depth)


def _winner_bary(clip: torch.Tensor, faces: torch.Tensor, face_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Perspective-correct barycentrics (B, H, W, 3) and depth (B, H, W) of each pixel's visible face, computed from
    ``clip`` (B, V, 4) with autograd (only covered pixels are evaluated, so background never produces NaN gradients)."""
    B, H, W = face_id.shape
    mask = face_id >= 0
    b_idx, rows, cols = mask.nonzero(as_tuple=True)
    vidx = faces[face_id[mask]]  # (N, 3)
    verts = clip[b_idx[:, None], vidx]  # (N, 3, 4)
    tri = clip_to_pixels(verts, W)
    centre = torch.stack([cols, rows], dim=-1).to(clip.dtype) + 0.5
    bary_n, depth_n = _perspective_correct(_edge_bary(tri, centre), verts[..., 3])
    bary = clip.new_zeros(B, H, W, 3).index_put((b_idx, rows, cols), bary_n)
    depth = clip.new_zeros(B, H, W).index_put((b_idx, rows, cols), depth_n)
    return bary, depth


def differentiable_bary(clip: torch.Tensor, faces: torch.Tensor, frags: Fragments) -> torch.Tensor:
    """Barycentrics (B, H, W, 3) of the faces chosen in ``frags``, recomputed from clip (B, V, 4) with autograd so that
    ``interpolate(attrs, frags, faces, bary=differentiable_bary(clip, faces, frags))`` has gradients w.r.t. vertex
    positions (through face interiors; the visibility itself carries no gradient)."""
    return _winner_bary(clip, faces.to(clip.device, torch.long), frags.face_id)[0]


def interpolate(
    attrs: torch.Tensor, frags: Fragments, faces: torch.Tensor, bary: torch.Tensor | None = None
) -> torch.Tensor:
    """Interpolate per-vertex attributes over the visible faces.

    attrs (V, C) shared by all views, or (B, V, C) per view; faces (F, 3); ``bary`` (B, H, W, 3) overrides
    ``frags.bary`` (e.g. ``differentiable_bary``). Returns (B, H, W, C), zero on background; differentiable w.r.t.
    ``attrs`` (and ``bary``).
    """
    face_id = frags.face_id
    bary = frags.bary if bary is None else bary
    vidx = faces.to(face_id.device, torch.long)[face_id.clamp_min(0)]  # (B, H, W, 3)
    if attrs.dim() == 2:
        corner = attrs[vidx]  # (B, H, W, 3, C)
    elif attrs.dim() == 3:
        b = torch.arange(face_id.shape[0], device=face_id.device)[:, None, None, None]
        corner = attrs[b, vidx]
    else:
        raise ValueError(f"attrs must be (V, C) or (B, V, C), got {tuple(attrs.shape)}")
    out = (bary.to(corner.dtype)[..., None] * corner).sum(-2)
    return out * frags.mask[..., None].to(out.dtype)
