"""Turntable renders (a ring of cameras around the object) and GIF / MP4 writing."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Callable

import imageio.v3 as iio
import numpy as np
import torch

from distill3d.cameras import Cameras, ring_cameras
from distill3d.viz.images import to_uint8

RenderFn = Callable[[Cameras, int], "torch.Tensor | dict[str, torch.Tensor]"]


@torch.no_grad()
def turntable_frames(
    render_fn: RenderFn, n_frames: int = 36, elevation: float = 15.0, size: int = 128, batch: int = 8,
    device: torch.device | str = "cpu", **ring_kwargs,
) -> torch.Tensor:
    """Render ``n_frames`` views on ``cameras.ring_cameras`` (azimuth 0, 360/n, ... from the front) at ``elevation``.

    ``render_fn(cams, size)`` returns rgb (B, H, W, 3) or a dict with key ``"rgb"`` (e.g. a ``functools.partial`` of
    ``mesh.render.render_mesh``); it is called ``batch`` cameras at a time. ``ring_kwargs`` (radius, fov) go to
    ``ring_cameras``. Returns (N, H, W, 3) float32 on CPU, clamped to [0, 1].
    """
    cams = ring_cameras(n_views=n_frames, elevation=elevation, device=device, **ring_kwargs)
    frames = []
    for s in range(0, n_frames, batch):
        out = render_fn(cams[list(range(s, min(s + batch, n_frames)))], size)
        rgb = out["rgb"] if isinstance(out, dict) else out
        frames.append(rgb.detach().float().clamp(0, 1).cpu())
    return torch.cat(frames)


def mp4_available() -> bool:
    """True when an imageio video backend (imageio-ffmpeg or PyAV) is importable."""
    return any(importlib.util.find_spec(m) is not None for m in ("imageio_ffmpeg", "av"))


def save_turntable(frames: torch.Tensor | np.ndarray, path: str | os.PathLike, fps: float = 12.0) -> Path:
    """Write frames (N, H, W, 3) float in [0, 1] as an endlessly looping GIF (``.gif``) or an H.264 MP4 (``.mp4``,
    only with imageio-ffmpeg or PyAV installed, else RuntimeError). Written atomically (temp file + os.replace).

    Pillow's GIF writer merges consecutive identical frames (adding up their durations), so a GIF of a rotationally
    symmetric object may hold fewer frames than given; playback timing is unchanged.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    data = to_uint8(frames)
    if data.ndim != 4 or data.shape[-1] not in (3, 4):
        raise ValueError(f"frames must be (N, H, W, 3), got {data.shape}")
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"unsupported turntable format {suffix!r} (use .gif or .mp4)")
    if suffix == ".mp4" and not mp4_available():
        raise RuntimeError("writing MP4 needs imageio-ffmpeg or av (pip install imageio-ffmpeg); use .gif")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".gif":
            # duration is per frame in milliseconds; loop=0 = forever.
            iio.imwrite(tmp, data, extension=".gif", plugin="pillow", duration=1000.0 / fps, loop=0)
        elif importlib.util.find_spec("av") is not None:
            iio.imwrite(tmp, data, extension=".mp4", plugin="pyav", codec="libx264", fps=fps)
        else:
            import imageio.v2 as iio2

            iio2.mimwrite(tmp, data, format="FFMPEG", fps=fps, macro_block_size=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
