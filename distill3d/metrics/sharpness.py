"""How well an asset resolves texture detail, measured on the toy world's stripes.

Striped toy objects carry horizontal bands of period ``sdf.STRIPE_PERIOD`` (world y). Two measures on albedo renders
of the asset and the ground truth from the same cameras, over pixels covered in both:

* ``stripe_energy_ratio``: per view, the row profile of lightness (mean CIELAB L* of each image row's pixels) is
  made zero-mean and Fourier transformed; the ground truth's strongest non-constant frequency is the stripe
  frequency, and the ratio is the asset's spectral energy in that bin and its two neighbours over the ground
  truth's (energies summed over views before dividing). 1 = stripes as crisp as the ground truth, ~0 = blurred away.
* ``psnr``: 10 log10(1 / MSE) of RGB in [0, 1] over the same pixels, capped at ``PSNR_CAP`` dB (identical images).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from distill3d.metrics.colour import rgb_to_lab
from distill3d.metrics.silhouette import binarize

PSNR_CAP = 100.0
MIN_ROW_PIXELS = 3  # rows with fewer shared object pixels are left out of the profile


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """PSNR (dB) of (N, C) values in [0, 1]; ``PSNR_CAP`` when identical; NaN for N = 0."""
    if pred.numel() == 0:
        return float("nan")
    mse = float(((pred.float() - gt.float()) ** 2).mean())
    return min(PSNR_CAP, 10.0 * math.log10(1.0 / max(mse, 1e-12)))


def row_profile(lightness: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Zero-mean (R,) profile of row means of ``lightness`` (H, W) over ``region`` (H, W) bool, for the R rows
    with at least ``MIN_ROW_PIXELS`` region pixels."""
    counts = region.sum(1)
    rows = counts >= MIN_ROW_PIXELS
    if rows.sum() < 4:
        return np.zeros(0)
    means = (lightness * region).sum(1)[rows] / counts[rows]
    return means - means.mean()


def band_energy(profile: np.ndarray, k: int) -> float:
    """Spectral energy |FFT|^2 of ``profile`` in bins k-1..k+1 (within 1..R/2)."""
    power = np.abs(np.fft.rfft(profile)) ** 2
    lo, hi = max(1, k - 1), min(len(power) - 1, k + 1)
    return float(power[lo : hi + 1].sum())


def sharpness_from_renders(
    pred: dict[str, torch.Tensor], gt: dict[str, torch.Tensor], views: list[int] | None = None,
    applicable: bool = True,
) -> dict[str, Any]:
    """Stripe energy ratio and PSNR of ``pred`` vs ``gt`` ({"rgb": (B, H, W, 3), "mask": (B, H, W)}) albedo renders.

    ``views``: indices used for the stripe profile (default all; top/bottom views, whose stripes are rings, should be
    left out); ``applicable``: the prompt is striped. Returns {applicable, stripe_energy_ratio (None when not
    applicable or when the ground truth shows no stripe frequency),
    psnr (None without shared pixels), psnr_per_view}.
    """
    pm, gm = binarize(pred["mask"].detach().cpu()), binarize(gt["mask"].detach().cpu())
    both = (pm & gm).numpy()
    prgb, grgb = pred["rgb"].detach().cpu().float(), gt["rgb"].detach().cpu().float()
    lp, lg = rgb_to_lab(prgb)[..., 0].numpy(), rgb_to_lab(grgb)[..., 0].numpy()
    e_pred = e_gt = 0.0
    for b in range(both.shape[0]) if views is None else views:
        gp, pp = row_profile(lg[b], both[b]), row_profile(lp[b], both[b])
        if len(gp) < 4:
            continue
        k = int(np.argmax(np.abs(np.fft.rfft(gp))[1:])) + 1
        e_gt += band_energy(gp, k)
        e_pred += band_energy(pp, k)
    per_view = [psnr(prgb[b][torch.from_numpy(both[b])], grgb[b][torch.from_numpy(both[b])]) for b in range(len(both))]
    shared = torch.from_numpy(both)
    overall = psnr(prgb[shared], grgb[shared])
    return {
        "applicable": bool(applicable),
        "stripe_energy_ratio": e_pred / e_gt if applicable and e_gt > 1e-6 else None,
        "psnr": None if math.isnan(overall) else overall,
        "psnr_per_view": [None if math.isnan(v) else v for v in per_view],
    }
