"""Ground-truth renderer of the toy world: sphere tracing of the analytic SDFs, Lambertian shading, white background."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from distill3d.cameras import Cameras, camera_rays
from distill3d.shading import DEFAULT_AMBIENT, headlight_directions, lambertian
from distill3d.toyworld import sdf as sdfs
from distill3d.toyworld.vocab import ObjectSpec

Mode = Literal["shaded", "albedo", "textureless"]


def _sphere_trace(shape: str, o: torch.Tensor, d: torch.Tensor, iters: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays (N, 3) -> hit (N,) bool and distance t (N,) along the ray to the surface of ``shape``."""
    R = sdfs.BOUNDING_RADIUS
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - R * R
    disc = b * b - c
    t = (-b - disc.clamp_min(0).sqrt()).clamp_min(0)
    t_far = -b + disc.clamp_min(0).sqrt()
    active = disc > 0
    hit = torch.zeros_like(active)
    idx = active.nonzero().squeeze(-1)
    for _ in range(iters):
        if idx.numel() == 0:
            break
        dist = sdfs.sdf(shape, o[idx] + t[idx, None] * d[idx])
        t[idx] = t[idx] + dist
        done = dist.abs() < 1e-4
        hit[idx[done]] = True
        escaped = t[idx] > t_far[idx]
        idx = idx[~done & ~escaped]
    # Rays still marching after the budget: accept those already very close to the surface.
    if idx.numel():
        close = sdfs.sdf(shape, o[idx] + t[idx, None] * d[idx]).abs() < 2e-3
        hit[idx[close]] = True
    return hit, t


def _normals(shape: str, p: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Unit outward normals (N, 3) by central differences of the SDF."""
    offsets = torch.eye(3, dtype=p.dtype, device=p.device) * eps
    grad = torch.stack(
        [sdfs.sdf(shape, p + offsets[i]) - sdfs.sdf(shape, p - offsets[i]) for i in range(3)], dim=-1
    )
    return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def render_gt_batch(
    specs: list[ObjectSpec],
    cams: Cameras,
    size: int,
    mode: Mode = "shaded",
    light_dir: torch.Tensor | None = None,
    ambient: float = DEFAULT_AMBIENT,
    background: float = 1.0,
    ssaa: int = 1,
) -> dict[str, torch.Tensor]:
    """Render object ``specs[b]`` from camera ``cams[b]``.

    Returns rgb (B, H, W, 3), mask (B, H, W) (fractional with ssaa > 1), depth (B, H, W) = distance along the ray
    (0 on background), normal (B, H, W, 3) world-space (0 on background), albedo (B, H, W, 3).
    """
    B = len(cams)
    assert len(specs) == B, "one spec per camera"
    S = size * ssaa
    o, d = camera_rays(cams, S)
    o, d = o.reshape(B, -1, 3), d.reshape(B, -1, 3)
    light = headlight_directions(cams) if light_dir is None else light_dir
    rgb = torch.full((B, S * S, 3), float(background))
    alb = torch.zeros(B, S * S, 3)
    nrm = torch.zeros(B, S * S, 3)
    depth = torch.zeros(B, S * S)
    mask = torch.zeros(B, S * S)
    for shape in {s.shape for s in specs}:
        bs = [i for i, s in enumerate(specs) if s.shape == shape]
        ob, db = o[bs].reshape(-1, 3), d[bs].reshape(-1, 3)
        hit, t = _sphere_trace(shape, ob, db)
        p = ob + t[:, None] * db
        n = torch.zeros_like(p)
        n[hit] = _normals(shape, p[hit])
        a = torch.zeros_like(p)
        for k, b in enumerate(bs):
            sl = slice(k * S * S, (k + 1) * S * S)
            h = hit[sl]
            a_b = torch.zeros(S * S, 3)
            a_b[h] = sdfs.albedo(specs[b], p[sl][h])
            a[sl] = a_b
        a, n, t, hit = (x.reshape(len(bs), S * S, *x.shape[1:]) for x in (a, n, t, hit))
        alb[bs], nrm[bs], depth[bs] = a, n, torch.where(hit, t, 0.0)
        mask[bs] = hit.float()
    if mode == "albedo":
        col = alb
    else:
        base = torch.ones_like(alb) if mode == "textureless" else alb
        col = lambertian(base, nrm, light[:, None, :], ambient)
    rgb = torch.where(mask[..., None] > 0, col, rgb)

    def img(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(B, S, S, -1).permute(0, 3, 1, 2)
        if ssaa > 1:
            x = F.avg_pool2d(x, ssaa)
        return x.permute(0, 2, 3, 1)

    m = img(mask[..., None])
    # Depth/normal/albedo averaged over covered subpixels only.
    cover = m.clamp_min(1e-6)
    return {
        "rgb": img(rgb),
        "mask": m[..., 0],
        "depth": img(depth[..., None] * mask[..., None])[..., 0] / cover[..., 0] * (m[..., 0] > 0),
        "normal": img(nrm * mask[..., None]) / cover,
        "albedo": img(alb * mask[..., None]) / cover,
    }


def render_gt(spec: ObjectSpec, cams: Cameras, size: int, mode: Mode = "shaded", **kwargs) -> dict[str, torch.Tensor]:
    """Render one object from every camera in ``cams``; see ``render_gt_batch`` for outputs."""
    return render_gt_batch([spec] * len(cams), cams.to("cpu"), size, mode, **kwargs)
