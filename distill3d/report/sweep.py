"""DreamFusion's Figure 9 sweep: final renders over guidance scale x seed, and saturation / IoU against guidance.

Poole et al. (2022) show that small classifier-free guidance scales give blurry, washed-out assets and large ones
over-saturated colours; the grid puts seeds in rows and guidance scales in columns, the plot shows the mean HSV
saturation (with the ground truth's as a dashed line) and the silhouette IoU per guidance scale (points: seeds,
line: mean over seeds). Plots are PNG (matplotlib, Agg canvas: no display, no global backend switch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from distill3d.nested import lookup
from distill3d.viz.grid import save_grid
from distill3d.viz.images import to_uint8


def _image(value: Any, size: tuple[int, int] | None) -> np.ndarray:
    """A path (PNG/GIF: first frame) or (H, W, 3) array/tensor -> uint8 (H, W, 3), resized to ``size`` (H, W)."""
    if isinstance(value, (str, Path)):
        img = Image.open(value).convert("RGB")
    else:
        arr = to_uint8(value if isinstance(value, (np.ndarray, torch.Tensor)) else np.asarray(value))
        img = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _field(point: Any, name: str) -> Any:
    return point.get(name) if isinstance(point, Mapping) else getattr(point, name, None)


def sweep_grid(points: Sequence[Mapping[str, Any]], path: str | Path, scale: int = 1) -> Path:
    """Grid PNG of ``points``' images: one row per seed, one column per guidance scale (both ascending), labelled
    "w=<scale> s=<seed>"; a missing combination is a white tile. Images are resized to the first one's size."""
    scales = sorted({float(_field(p, "guidance_scale")) for p in points})
    seeds = sorted({int(_field(p, "seed")) for p in points})
    first = _image(_field(points[0], "image"), None)
    h, w = first.shape[:2]
    cells = {(float(_field(p, "guidance_scale")), int(_field(p, "seed"))): p for p in points}
    tiles, labels = [], []
    for seed in seeds:
        for gs in scales:
            p = cells.get((gs, seed))
            tiles.append(np.full((h, w, 3), 255, np.uint8) if p is None else _image(_field(p, "image"), (h, w)))
            labels.append(f"w={gs:g} s={seed}")
    return save_grid(np.stack(tiles), path, ncols=len(scales), labels=labels, scale=scale)


def sweep_plot(points: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """PNG plot of saturation (``metrics.saturation.mean``, ground truth dashed) and IoU (``metrics.iou_mean``)
    against guidance scale (log axis when the scales span more than a factor 10)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scales = sorted({float(_field(p, "guidance_scale")) for p in points})
    fig = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    series = (("saturation.mean", "mean HSV saturation"), ("iou_mean", "silhouette IoU"))
    for k, (key, ylabel) in enumerate(series):
        ax = fig.add_subplot(1, 2, k + 1)
        xs, ys, means = [], [], []
        for gs in scales:
            vals = [lookup(_field(p, "metrics"), key) for p in points if float(_field(p, "guidance_scale")) == gs]
            vals = [float(v) for v in vals if v is not None]
            xs += [gs] * len(vals)
            ys += vals
            means.append(float(np.mean(vals)) if vals else math.nan)
        ax.scatter(xs, ys, s=14, alpha=0.6, label="seeds")
        ax.plot(scales, means, marker="o", label="mean")
        if key == "saturation.mean":
            gt = [lookup(_field(p, "metrics"), "saturation.gt_mean") for p in points]
            gt = [float(v) for v in gt if v is not None]
            if gt:
                ax.axhline(float(np.mean(gt)), linestyle="--", color="gray", label="ground truth")
        if scales and scales[0] > 0 and scales[-1] / scales[0] > 10:
            ax.set_xscale("log")
        ax.set_xlabel("guidance scale")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def sweep_figure(
    points: Sequence[Mapping[str, Any]], out_dir: str | Path, title: str = "guidance scale sweep", scale: int = 1,
) -> dict[str, Path]:
    """DreamFusion Fig. 9 for ``points``: each {guidance_scale: float, seed: int, image: PNG path or (H, W, 3)
    array in [0, 1] / uint8 (a final render), metrics: a ``metrics.suite`` dict}. Writes
    ``out_dir/sweep_grid.png`` and ``out_dir/sweep_plot.png``; returns {"grid": path, "plot": path}."""
    if not points:
        raise ValueError("sweep_figure needs at least one point")
    out_dir = Path(out_dir)
    return {
        "grid": sweep_grid(points, out_dir / "sweep_grid.png", scale=scale),
        "plot": sweep_plot(points, out_dir / "sweep_plot.png", title=title),
    }
