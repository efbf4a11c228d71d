"""Stripe resolution: spectral energy at the stripe frequency and PSNR against the ground truth."""

import math

import pytest
import torch
import torch.nn.functional as F

from distill3d.cameras import ring_cameras
from distill3d.metrics.sharpness import PSNR_CAP, psnr, sharpness_from_renders
from distill3d.toyworld.render import render_gt
from distill3d.toyworld.vocab import parse_prompt


def test_psnr_known_values() -> None:
    a = torch.zeros(10, 3)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)
    assert psnr(a, a) == PSNR_CAP
    assert math.isnan(psnr(a[:0], a[:0]))


def _stripes(amplitude: float = 0.4, period: int = 8, size: int = 48, blur: int = 0):
    """(1, size, size) render: a centred square of horizontal stripes of ``period`` rows around grey 0.5."""
    rows = torch.arange(size).float()
    profile = 0.5 + amplitude * torch.sign(torch.sin(2 * math.pi * (rows + 0.5) / period))
    if blur:
        profile = F.avg_pool1d(profile[None, None], blur, stride=1, padding=blur // 2, count_include_pad=False)[0, 0]
    rgb = profile[:size, None, None].expand(size, size, 3).clone()
    mask = torch.zeros(size, size)
    mask[4:-4, 4:-4] = 1.0
    return {"rgb": rgb[None], "mask": mask[None]}


def test_stripe_energy_ratio_on_synthetic_stripes() -> None:
    gt = _stripes()
    assert sharpness_from_renders(gt, gt)["stripe_energy_ratio"] == pytest.approx(1.0)
    blurred = sharpness_from_renders(_stripes(blur=7), gt)
    assert blurred["stripe_energy_ratio"] < 0.5 and blurred["psnr"] < 30
    flat = sharpness_from_renders(_stripes(amplitude=0.0), gt)
    assert flat["stripe_energy_ratio"] == pytest.approx(0.0, abs=1e-6)
    # energy grows with the square of the stripe contrast (L* is not linear in RGB, hence the wide band)
    half = sharpness_from_renders(_stripes(amplitude=0.2), gt)["stripe_energy_ratio"]
    assert 0.15 < half < 0.4
    assert sharpness_from_renders(gt, gt, applicable=False)["stripe_energy_ratio"] is None


def test_sharpness_on_ground_truth_renders() -> None:
    cams = ring_cameras(4, 15.0)
    gt = render_gt(parse_prompt("a blue striped sphere"), cams, 64, mode="albedo")
    same = sharpness_from_renders(gt, gt)
    assert same["stripe_energy_ratio"] == pytest.approx(1.0) and same["psnr"] == PSNR_CAP
    assert same["psnr_per_view"] == [PSNR_CAP] * 4
    plain = render_gt(parse_prompt("a blue sphere"), cams, 64, mode="albedo")
    lost = sharpness_from_renders(plain, gt)
    assert lost["stripe_energy_ratio"] < 0.05 and lost["psnr"] < 15
    none = sharpness_from_renders({"rgb": gt["rgb"], "mask": torch.zeros_like(gt["mask"])}, gt)
    assert none["stripe_energy_ratio"] is None and none["psnr"] is None and none["psnr_per_view"] == [None] * 4
