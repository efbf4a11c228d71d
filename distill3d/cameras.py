"""The one camera convention of distill3d.

World frame: right-handed, +Y up, objects centred at the origin inside [-1, 1]^3, an object's *front* faces +Z.

Spherical camera parameters (degrees):
    azimuth   0 = camera on the +Z axis (sees the front), 90 = on the +X axis, 180 = behind (sees the back).
    elevation 0 = level with the origin, 90 = straight above.
    position  = radius * (cos(el) sin(az), sin(el), cos(el) cos(az)); the camera always looks at the origin.

Camera frame: OpenGL style, camera-to-world matrix ``c2w`` (4x4) whose columns are the camera's +X (right),
+Y (up) and +Z (backwards: the camera looks along -Z) axes and its position. Images are square, pinhole, with
vertical field of view ``fov`` (degrees); pixel (row i, col j) has its centre at (j + 0.5, i + 0.5); row 0 is the top.

The same ``Cameras`` render ground truth (sphere tracing), radiance fields (volume rendering) and meshes
(rasterisation), so silhouettes from all three line up pixel for pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

VIEW_PHRASES = ("front", "side", "back", "overhead")


@dataclass
class Cameras:
    """A batch of B cameras. All tensors have leading dimension B."""

    c2w: torch.Tensor  # (B, 4, 4)
    fov: torch.Tensor  # (B,) vertical field of view, degrees
    azimuth: torch.Tensor  # (B,) degrees
    elevation: torch.Tensor  # (B,) degrees
    radius: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return self.c2w.shape[0]

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def position(self) -> torch.Tensor:
        """(B, 3) camera centres in world space."""
        return self.c2w[:, :3, 3]

    def to(self, device: torch.device | str) -> "Cameras":
        return Cameras(*(getattr(self, f).to(device) for f in ("c2w", "fov", "azimuth", "elevation", "radius")))

    def __getitem__(self, idx) -> "Cameras":
        idx = [idx] if isinstance(idx, int) else idx
        return Cameras(*(getattr(self, f)[idx] for f in ("c2w", "fov", "azimuth", "elevation", "radius")))

    def view_phrases(self, overhead_threshold: float = 60.0, front_half_angle: float = 45.0) -> list[str]:
        """DreamFusion's view-dependent prompt phrase for each camera."""
        return [
            view_phrase(float(a), float(e), overhead_threshold, front_half_angle)
            for a, e in zip(self.azimuth, self.elevation)
        ]


def view_phrase(
    azimuth: float, elevation: float, overhead_threshold: float = 60.0, front_half_angle: float = 45.0
) -> str:
    """'overhead' above ``overhead_threshold`` elevation, else 'front' / 'side' / 'back' by azimuth (DreamFusion 3.2)."""
    if elevation > overhead_threshold:
        return "overhead"
    az = (azimuth + 180.0) % 360.0 - 180.0  # wrap to [-180, 180)
    if abs(az) <= front_half_angle:
        return "front"
    if abs(az) >= 180.0 - front_half_angle:
        return "back"
    return "side"


def look_at_origin(position: torch.Tensor) -> torch.Tensor:
    """(B, 3) camera positions -> (B, 4, 4) camera-to-world matrices looking at the origin, +Y up."""
    forward = -position / position.norm(dim=-1, keepdim=True)  # camera looks along -Z, so +Z = -forward
    world_up = torch.tensor([0.0, 1.0, 0.0], device=position.device, dtype=position.dtype).expand_as(position)
    right = torch.linalg.cross(forward, world_up, dim=-1)
    # Straight above/below: pick +X as right so the basis stays defined.
    degenerate = right.norm(dim=-1) < 1e-6
    if degenerate.any():
        right = right.clone()
        right[degenerate] = torch.tensor([1.0, 0.0, 0.0], device=position.device, dtype=position.dtype)
    right = right / right.norm(dim=-1, keepdim=True)
    up = torch.linalg.cross(right, forward, dim=-1)
    c2w = torch.zeros(position.shape[0], 4, 4, device=position.device, dtype=position.dtype)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = position
    c2w[:, 3, 3] = 1.0
    return c2w


def spherical_cameras(
    azimuth: torch.Tensor | list[float],
    elevation: torch.Tensor | list[float],
    radius: torch.Tensor | list[float] | float = 2.6,
    fov: torch.Tensor | list[float] | float = 40.0,
    device: torch.device | str = "cpu",
) -> Cameras:
    """Cameras on a sphere around the origin from azimuth/elevation/radius (degrees, world units)."""
    az = torch.as_tensor(azimuth, dtype=torch.float32, device=device).reshape(-1)
    el = torch.as_tensor(elevation, dtype=torch.float32, device=device).reshape(-1)
    n = max(az.numel(), el.numel())
    az, el = az.expand(n).clone(), el.expand(n).clone()
    r = torch.as_tensor(radius, dtype=torch.float32, device=device).reshape(-1).expand(n).clone()
    f = torch.as_tensor(fov, dtype=torch.float32, device=device).reshape(-1).expand(n).clone()
    a, e = torch.deg2rad(az), torch.deg2rad(el)
    pos = torch.stack([torch.cos(e) * torch.sin(a), torch.sin(e), torch.cos(e) * torch.cos(a)], dim=-1) * r[:, None]
    return Cameras(c2w=look_at_origin(pos), fov=f, azimuth=az, elevation=el, radius=r)


@dataclass(frozen=True)
class CameraDistribution:
    """Ranges for random training cameras (DreamFusion 3.2: random azimuth, elevation, distance and focal length)."""

    elevation: tuple[float, float] = (-10.0, 60.0)
    azimuth: tuple[float, float] = (-180.0, 180.0)
    radius: tuple[float, float] = (2.4, 2.8)
    fov: tuple[float, float] = (38.0, 42.0)
    overhead_probability: float = 0.05  # extra mass on near-overhead views (elevation 60-89)


def sample_cameras(
    n: int, dist: CameraDistribution = CameraDistribution(), generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Cameras:
    """Sample n cameras from ``dist`` (uniform in each range; elevation uniform over the sphere's band)."""

    def uniform(lo_hi: tuple[float, float]) -> torch.Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    az = uniform(dist.azimuth)
    # Uniform in sin(elevation) gives uniform density on the sphere band, as DreamFusion samples.
    s_lo, s_hi = (math.sin(math.radians(v)) for v in dist.elevation)
    el = torch.rad2deg(torch.asin(s_lo + (s_hi - s_lo) * torch.rand(n, generator=generator)))
    overhead = torch.rand(n, generator=generator) < dist.overhead_probability
    el = torch.where(overhead, 60.0 + 29.0 * torch.rand(n, generator=generator), el)
    return spherical_cameras(az, el, uniform(dist.radius), uniform(dist.fov), device=device)


def ring_cameras(
    n_views: int = 8, elevation: float = 15.0, radius: float = 2.6, fov: float = 40.0,
    with_top_bottom: bool = False, device: torch.device | str = "cpu",
) -> Cameras:
    """Fixed evaluation/turntable ring: azimuths 0, 360/n, ... starting at the front; optional top and bottom."""
    az = [360.0 * i / n_views for i in range(n_views)]
    el = [elevation] * n_views
    if with_top_bottom:
        az += [0.0, 0.0]
        el += [89.0, -89.0]
    return spherical_cameras(az, el, radius, fov, device=device)


def focal_pixels(fov: torch.Tensor, size: int) -> torch.Tensor:
    """Focal length in pixels for a square image of ``size`` pixels and vertical fov (degrees)."""
    return 0.5 * size / torch.tan(torch.deg2rad(fov) / 2)


def camera_rays(cams: Cameras, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-space rays through pixel centres.

    Returns origins (B, H, W, 3) and unit directions (B, H, W, 3) with H = W = size.
    """
    device = cams.device
    idx = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    i, j = torch.meshgrid(idx, idx, indexing="ij")  # i rows (down), j cols (right)
    f = focal_pixels(cams.fov, size)[:, None, None]
    x = (j[None] - size / 2) / f
    y = -(i[None] - size / 2) / f
    d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # (B, H, W, 3)
    d = torch.einsum("bij,bhwj->bhwi", cams.c2w[:, :3, :3], d_cam)
    d = d / d.norm(dim=-1, keepdim=True)
    o = cams.position[:, None, None, :].expand_as(d)
    return o, d


def projection_matrix(fov: torch.Tensor, near: float = 0.1, far: float = 100.0) -> torch.Tensor:
    """(B,) fov -> (B, 4, 4) OpenGL perspective projection (camera space -> clip space), aspect 1."""
    t = 1.0 / torch.tan(torch.deg2rad(fov) / 2)
    P = torch.zeros(fov.shape[0], 4, 4, device=fov.device, dtype=torch.float32)
    P[:, 0, 0] = t
    P[:, 1, 1] = t
    P[:, 2, 2] = -(far + near) / (far - near)
    P[:, 2, 3] = -2.0 * far * near / (far - near)
    P[:, 3, 2] = -1.0
    return P


def world_to_clip(points: torch.Tensor, cams: Cameras, near: float = 0.1, far: float = 100.0) -> torch.Tensor:
    """(N, 3) world points -> (B, N, 4) clip coordinates. NDC x = clip.x / clip.w points right, y up.

    Pixel coordinates of NDC (x, y) for a size-S image: col = (x + 1) / 2 * S, row = (1 - y) / 2 * S, which matches
    ``camera_rays`` exactly.
    """
    w2c = torch.linalg.inv(cams.c2w)
    P = projection_matrix(cams.fov, near, far)
    homog = torch.cat([points, torch.ones_like(points[:, :1])], dim=-1)  # (N, 4)
    return torch.einsum("bij,bjk,nk->bni", P, w2c, homog)


def sample_multiview_cameras(
    n_groups: int, n_views: int = 4, dist: CameraDistribution = CameraDistribution(),
    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
) -> Cameras:
    """Groups of cameras as MVDream samples them (Shi et al. 2023, sec. 3.1 and 3.3): per group one random azimuth
    offset a0 ~ U(dist.azimuth) and the ``n_views`` azimuths a0 + 360 k / n_views (k = 0 .. n_views - 1, so 90 degrees
    apart for 4 views, in increasing order), sharing one elevation, radius and fov drawn from ``dist`` the way
    ``sample_cameras`` draws them (elevation uniform in sin over the band, plus the overhead mass).

    Returns n_groups * n_views cameras, group-major: cameras [g * n_views, (g + 1) * n_views) are group g, the layout a
    multi-view prior (``Prior.views_per_sample``) reads. Azimuths are wrapped to [-180, 180).
    """
    one = sample_cameras(n_groups, dist, generator=generator)  # per group: offset, elevation, radius, fov
    steps = torch.arange(n_views, dtype=torch.float32) * (360.0 / n_views)
    az = (one.azimuth[:, None] + steps[None, :] + 180.0) % 360.0 - 180.0
    rep = lambda x: x[:, None].expand(n_groups, n_views).reshape(-1)  # noqa: E731
    return spherical_cameras(az.reshape(-1), rep(one.elevation), rep(one.radius), rep(one.fov), device=device)
