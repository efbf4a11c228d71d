"""Colour saturation of an asset relative to the ground truth.

DreamFusion (Poole et al. 2022, Fig. 9) shows that large classifier-free guidance scales give over-saturated,
cartoonish colours. We measure it on object pixels of albedo renders: the mean HSV saturation
S = (max(R, G, B) - min(R, G, B)) / max(R, G, B) (0 for black) of the asset against that of the ground truth from
the same cameras; ``excess`` = mean - gt_mean (signed: > 0 over-saturated, < 0 washed out), ``over`` = max(excess, 0).
``histogram_distance`` is the Hellinger distance sqrt(1 - sum_i sqrt(p_i q_i)) in [0, 1] between the joint HSV
colour histograms (hue x saturation x value bins) of the two sets of object pixels.
"""

from __future__ import annotations

from typing import Any

import torch

from distill3d.metrics.silhouette import binarize


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) RGB in [0, 1] -> (..., 3) HSV, each channel in [0, 1] (hue as a fraction of the colour wheel)."""
    rgb = rgb.float().clamp(0.0, 1.0)
    r, g, b = rgb.unbind(-1)
    v, _ = rgb.max(-1)
    c = v - rgb.min(-1).values
    s = torch.where(v > 0, c / v.clamp_min(1e-12), torch.zeros_like(v))
    safe_c = c.clamp_min(1e-12)
    h = torch.where(
        v == r, ((g - b) / safe_c) % 6.0, torch.where(v == g, (b - r) / safe_c + 2.0, (r - g) / safe_c + 4.0)
    )
    h = torch.where(c > 0, h / 6.0, torch.zeros_like(h))
    return torch.stack([h, s, v], dim=-1)


def mean_saturation(rgb: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Mean HSV saturation of the object pixels (mask > 0.5) of rgb (B, H, W, 3); None without object pixels."""
    obj = binarize(mask.detach().cpu())
    if not obj.any():
        return None
    return float(rgb_to_hsv(rgb.detach().cpu())[..., 1][obj].mean())


def hsv_histogram(pixels: torch.Tensor, bins: tuple[int, int, int] = (12, 4, 4)) -> torch.Tensor:
    """Normalised joint HSV histogram (prod(bins),) of (N, 3) RGB pixels (all zeros for N = 0)."""
    hsv = rgb_to_hsv(pixels.reshape(-1, 3))
    sizes = torch.tensor(bins)
    idx = (hsv * sizes).long().clamp(max=sizes - 1)  # (N, 3) bin per channel
    flat = (idx[:, 0] * bins[1] + idx[:, 1]) * bins[2] + idx[:, 2]
    hist = torch.bincount(flat, minlength=int(sizes.prod())).float()
    return hist / hist.sum().clamp_min(1.0)


def hellinger(p: torch.Tensor, q: torch.Tensor) -> float:
    """Hellinger distance of two normalised histograms, in [0, 1] (0 = identical)."""
    return float(torch.sqrt((1.0 - torch.sqrt(p * q).sum()).clamp_min(0.0)))


def saturation_from_renders(pred: dict[str, torch.Tensor], gt: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Saturation of ``pred`` against ``gt`` ({"rgb": (B, H, W, 3), "mask": (B, H, W)}, albedo renders).

    Returns {mean, gt_mean, excess, over, histogram_distance}; values that need object pixels the render lacks
    are None.
    """
    mean, gt_mean = mean_saturation(pred["rgb"], pred["mask"]), mean_saturation(gt["rgb"], gt["mask"])
    excess = None if mean is None or gt_mean is None else mean - gt_mean
    pm, gm = binarize(pred["mask"].detach().cpu()), binarize(gt["mask"].detach().cpu())
    distance = None
    if pm.any() and gm.any():
        distance = hellinger(hsv_histogram(pred["rgb"].detach().cpu()[pm]), hsv_histogram(gt["rgb"].detach().cpu()[gm]))
    return {
        "mean": mean, "gt_mean": gt_mean, "excess": excess,
        "over": None if excess is None else max(excess, 0.0), "histogram_distance": distance,
    }


def saturate(rgb: torch.Tensor, gamma: float) -> torch.Tensor:
    """Change saturation keeping hue and value: S -> S ** gamma (gamma < 1 saturates, > 1 desaturates).

    rgb (..., 3) in [0, 1] -> (..., 3). Used to build deliberately over-saturated test assets.
    """
    hsv = rgb_to_hsv(rgb)
    h, s, v = hsv.unbind(-1)
    s = s.clamp(0, 1) ** gamma
    # HSV -> RGB: channel k = v - v s max(0, min(m, 4 - m, 1)) with m = (k_offset + 6h) mod 6.
    out = []
    for offset in (5.0, 3.0, 1.0):
        m = (offset + 6.0 * h) % 6.0
        out.append(v - v * s * torch.clamp(torch.minimum(m, 4.0 - m), 0.0, 1.0))
    return torch.stack(out, dim=-1)
