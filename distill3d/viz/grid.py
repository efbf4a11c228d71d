"""Image grids as PNG (Pillow), with optional labels and nearest-neighbour upscaling for tiny images."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from distill3d.viz.images import to_uint8


def make_grid(
    images: torch.Tensor | np.ndarray, ncols: int = 8, labels: list[str] | None = None, scale: int = 1,
    pad: int = 2, background: int = 255,
) -> Image.Image:
    """Tile images (N, H, W, 3) float in [0, 1] (or uint8) row by row into ``ncols`` columns.

    Each image is upscaled ``scale`` times with nearest neighbour (crisp 32x32 pixels); ``labels`` (N strings) are
    drawn with PIL's default font in a strip above each cell, cut to the cell width; ``pad`` pixels of ``background``
    grey separate cells. Returns an RGB ``PIL.Image``.
    """
    data = to_uint8(images)
    if data.ndim == 3:  # a single image or grey images (N, H, W)
        data = data[..., None]
    if data.shape[-1] == 1:
        data = np.repeat(data, 3, axis=-1)
    data = data[..., :3]
    n, h, w, _ = data.shape
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    ch, cw = h * scale, w * scale
    font = ImageFont.load_default()
    label_h = 0
    if labels is not None:
        x0, y0, x1, y1 = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), "Ag|", font=font)
        label_h = y1 + 3
    cell_h = ch + label_h
    canvas = Image.new("RGB", (ncols * cw + (ncols + 1) * pad, nrows * cell_h + (nrows + 1) * pad), (background,) * 3)
    draw = ImageDraw.Draw(canvas)
    for k in range(n):
        r, c = divmod(k, ncols)
        x, y = pad + c * (cw + pad), pad + r * (cell_h + pad)
        tile = Image.fromarray(np.ascontiguousarray(data[k]))
        if scale != 1:
            tile = tile.resize((cw, ch), Image.Resampling.NEAREST)
        canvas.paste(tile, (x, y + label_h))
        if labels is not None:
            text = str(labels[k])
            while text and draw.textlength(text, font=font) > cw:
                text = text[:-1]
            draw.text((x, y + 1), text, fill=(0, 0, 0), font=font)
    return canvas


def save_grid(
    images: torch.Tensor | np.ndarray, path: str | os.PathLike, ncols: int = 8, labels: list[str] | None = None,
    scale: int = 1, pad: int = 2,
) -> Path:
    """``make_grid`` written as PNG to ``path`` atomically (temp file + os.replace). Returns the path."""
    path = Path(path)
    grid = make_grid(images, ncols=ncols, labels=labels, scale=scale, pad=pad)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        grid.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
