"""Small fake assets and sweep points for the report tests (turntable GIF + views PNG rendered from ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distill3d.cameras import ring_cameras
from distill3d.toyworld.render import render_gt
from distill3d.toyworld.vocab import parse_prompt
from distill3d.viz.grid import save_grid
from distill3d.viz.turntable import save_turntable


def fake_metrics(iou: float, saturation: float, clip: float | None = None) -> dict[str, Any]:
    """The part of a ``metrics.suite`` dict the report reads."""
    return {
        "iou_all_views": iou, "iou_mean": iou, "iou_ring_mean": iou + 0.02, "colour_error_lab": 3.5,
        "colour_name": "red", "depth_error": 0.012, "chamfer": {"chamfer": 0.011},
        "volume": {"iou": iou - 0.1, "precision": 0.9, "recall": 0.95},
        "normals": {"error_deg": 12.5, "roughness_deg": 4.25},
        "janus": {"rate_back": 0.0, "rate_side": 1 / 3},
        "saturation": {"mean": saturation, "gt_mean": 0.6, "excess": saturation - 0.6},
        "sharpness": {"stripe_energy_ratio": None, "psnr": 25.0},
        "clip_r_precision": {"skipped": "no CLIP model folder given"} if clip is None else {"r_precision": clip},
    }


def fake_asset(folder: Path, prompt: str, frames: int = 4, size: int = 24, views: bool = True) -> Path:
    """Write turntable.gif (and views.png) of the prompt's ground truth into ``folder``."""
    rgb = render_gt(parse_prompt(prompt), ring_cameras(frames, 15.0), size)["rgb"]
    folder.mkdir(parents=True, exist_ok=True)
    save_turntable(rgb, folder / "turntable.gif", fps=4)
    if views:
        save_grid(rgb, folder / "views.png", ncols=frames)
    return folder


def fake_entries(root: Path) -> list[dict[str, Any]]:
    """Two prompts x two methods; the second method's cube lacks views.png and metrics."""
    entries = []
    for prompt in ("a red cube", "a blue sphere with a face"):
        for method, iou in (("dreamfusion", 0.91), ("sjc", 0.84)):
            missing = method == "sjc" and "cube" in prompt
            folder = fake_asset(root / f"{method}-{prompt.replace(' ', '_')}", prompt, views=not missing)
            entries.append({"method": method, "prompt": prompt, "seed": 0, "asset_dir": folder,
                            "metrics": None if missing else fake_metrics(iou, 0.7, clip=0.5 if iou > 0.9 else None)})
    return entries


def fake_sweep_points(scales=(1.0, 10.0, 100.0), seeds=(0, 1), size: int = 16) -> list[dict[str, Any]]:
    """Points whose saturation rises and IoU falls with guidance scale, images coloured by scale."""
    points = []
    for k, gs in enumerate(scales):
        for seed in seeds:
            image = torch.zeros(size, size, 3)
            image[..., k % 3] = 1.0
            points.append({"guidance_scale": gs, "seed": seed, "image": image,
                           "metrics": fake_metrics(0.9 - 0.1 * k + 0.01 * seed, 0.5 + 0.2 * k)})
    return points
