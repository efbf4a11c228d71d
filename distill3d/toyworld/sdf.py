"""Analytic signed distance functions of the toy-world shapes and their surface colours.

All shapes are centred at the origin, sit inside a sphere of radius 0.8 (so inside [-1, 1]^3), have +Y as their
axis of symmetry and face +Z (the side that carries a face). Distances are exact Euclidean distances, so sphere
tracing converges and the zero level set is the ground-truth surface. Formulas follow the standard closed forms
for primitives (see Inigo Quilez's catalogue of distance functions).
"""

from __future__ import annotations

import math

import torch

from distill3d.toyworld.vocab import COLOURS, FACE_COLOUR, STRIPE_COLOUR, ObjectSpec

SPHERE_RADIUS = 0.6
CUBE_HALF = 0.45
CUBE_ROUNDING = 0.03
CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT = 0.45, 0.55
CONE_BASE_RADIUS, CONE_HALF_HEIGHT = 0.55, 0.575
TORUS_MAJOR, TORUS_MINOR = 0.45, 0.18
BOUNDING_RADIUS = 0.8
STRIPE_PERIOD = 0.4


def _length2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + y * y)


def sdf_sphere(p: torch.Tensor) -> torch.Tensor:
    return p.norm(dim=-1) - SPHERE_RADIUS


def sdf_cube(p: torch.Tensor) -> torch.Tensor:
    """Rounded box with half-extent CUBE_HALF (edges rounded by CUBE_ROUNDING)."""
    q = p.abs() - (CUBE_HALF - CUBE_ROUNDING)
    outside = q.clamp_min(0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp_max(0)
    return outside + inside - CUBE_ROUNDING


def sdf_cylinder(p: torch.Tensor) -> torch.Tensor:
    """Capped cylinder around +Y."""
    dx = _length2(p[..., 0], p[..., 2]) - CYLINDER_RADIUS
    dy = p[..., 1].abs() - CYLINDER_HALF_HEIGHT
    outside = _length2(dx.clamp_min(0), dy.clamp_min(0))
    return outside + torch.maximum(dx, dy).clamp_max(0)


def sdf_cone(p: torch.Tensor) -> torch.Tensor:
    """Cone around +Y: base disc of radius CONE_BASE_RADIUS at y = -h, apex at y = +h (h = CONE_HALF_HEIGHT).

    Exact distance to a capped cone with radii r1 (bottom) and r2 = 0 (top) in the (radial, y) half-plane.
    """
    h, r1, r2 = CONE_HALF_HEIGHT, CONE_BASE_RADIUS, 0.0
    qx = _length2(p[..., 0], p[..., 2])
    qy = p[..., 1]
    k1x, k1y = r2, h
    k2x, k2y = r2 - r1, 2.0 * h
    cap_r = torch.where(qy < 0, torch.full_like(qy, r1), torch.full_like(qy, r2))
    cax = qx - torch.minimum(qx, cap_r)
    cay = qy.abs() - h
    s = ((k1x - qx) * k2x + (k1y - qy) * k2y) / (k2x * k2x + k2y * k2y)
    s = s.clamp(0.0, 1.0)
    cbx = qx - k1x + k2x * s
    cby = qy - k1y + k2y * s
    sign = torch.where((cbx < 0) & (cay < 0), -1.0, 1.0)
    return sign * torch.sqrt(torch.minimum(cax * cax + cay * cay, cbx * cbx + cby * cby))


def sdf_torus(p: torch.Tensor) -> torch.Tensor:
    """Torus lying flat (its hole along +Y)."""
    qx = _length2(p[..., 0], p[..., 2]) - TORUS_MAJOR
    return _length2(qx, p[..., 1]) - TORUS_MINOR


SDFS = {"sphere": sdf_sphere, "cube": sdf_cube, "cylinder": sdf_cylinder, "cone": sdf_cone, "torus": sdf_torus}


def sdf(spec: ObjectSpec | str, p: torch.Tensor) -> torch.Tensor:
    """Signed distance (N,) of points (N, 3) to the object (negative inside)."""
    shape = spec if isinstance(spec, str) else spec.shape
    return SDFS[shape](p)


def face_mask(p: torch.Tensor) -> torch.Tensor:
    """(N,) bool: surface points (N, 3) that belong to the face (two eyes and a mouth on the +Z side).

    Features are placed in angular coordinates around the origin (u: azimuth from +Z, v: elevation), so they
    land on the front of every shape.
    """
    u = torch.atan2(p[..., 0], p[..., 2])
    v = torch.asin((p[..., 1] / p.norm(dim=-1).clamp_min(1e-6)).clamp(-1, 1))
    front = u.abs() < math.pi / 2
    eye_r, eye_u, eye_v = 0.2, 0.38, 0.24
    eyes = ((u - eye_u) ** 2 + (v - eye_v) ** 2 < eye_r**2) | ((u + eye_u) ** 2 + (v - eye_v) ** 2 < eye_r**2)
    mouth = (v > -0.42) & (v < -0.24) & (u.abs() < 0.45)
    return front & (eyes | mouth)


def albedo(spec: ObjectSpec, p: torch.Tensor) -> torch.Tensor:
    """Surface albedo (N, 3) in [0, 1] at surface points (N, 3): base colour, optional stripes and face."""
    base = torch.tensor(COLOURS[spec.colour], dtype=p.dtype, device=p.device).expand(p.shape[0], 3)
    out = base.clone()
    if spec.pattern == "striped":
        stripe = torch.remainder(p[..., 1] + 1.0, STRIPE_PERIOD) < STRIPE_PERIOD / 2
        out[stripe] = torch.tensor(STRIPE_COLOUR, dtype=p.dtype, device=p.device)
    if spec.face:
        out[face_mask(p)] = torch.tensor(FACE_COLOUR, dtype=p.dtype, device=p.device)
    return out
