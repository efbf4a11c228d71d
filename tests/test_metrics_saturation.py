"""HSV saturation of object pixels relative to the ground truth, and the colour-histogram distance."""

import colorsys

import pytest
import torch

from distill3d.cameras import ring_cameras
from distill3d.metrics.saturation import (
    hellinger, hsv_histogram, mean_saturation, rgb_to_hsv, saturate, saturation_from_renders,
)
from distill3d.toyworld.render import render_gt
from distill3d.toyworld.vocab import parse_prompt


def test_rgb_to_hsv_matches_colorsys() -> None:
    rgb = torch.rand(200, 3, generator=torch.Generator().manual_seed(0))
    rgb[:3] = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 0.0, 0.0]])
    hsv = rgb_to_hsv(rgb)
    ref = torch.tensor([colorsys.rgb_to_hsv(*map(float, p)) for p in rgb])
    assert torch.allclose(hsv, ref, atol=1e-5)


def test_saturate_keeps_hue_and_value_and_changes_saturation() -> None:
    rgb = torch.rand(100, 3, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    assert torch.allclose(saturate(rgb, 1.0), rgb, atol=1e-5)
    hsv, more, less = rgb_to_hsv(rgb), rgb_to_hsv(saturate(rgb, 0.4)), rgb_to_hsv(saturate(rgb, 2.5))
    assert torch.allclose(more[:, 1], hsv[:, 1] ** 0.4, atol=1e-4) and (more[:, 1] >= hsv[:, 1] - 1e-6).all()
    assert (less[:, 1] <= hsv[:, 1] + 1e-6).all()
    assert torch.allclose(more[:, 2], hsv[:, 2], atol=1e-5)
    hue_diff = (more[:, 0] - hsv[:, 0]).abs()
    assert torch.minimum(hue_diff, 1 - hue_diff).max() < 1e-4


def test_mean_saturation_uses_object_pixels_only() -> None:
    rgb = torch.ones(1, 4, 4, 3)  # white background: saturation 0
    rgb[0, :2] = torch.tensor([1.0, 0.0, 0.0])  # saturation 1
    rgb[0, 2:, :2] = torch.tensor([0.8, 0.4, 0.4])  # saturation 0.5
    mask = torch.zeros(1, 4, 4)
    mask[0, :2] = 1.0
    assert mean_saturation(rgb, mask) == pytest.approx(1.0)
    mask[0, 2:, :2] = 1.0
    assert mean_saturation(rgb, mask) == pytest.approx((8 * 1.0 + 4 * 0.5) / 12)
    assert mean_saturation(rgb, torch.zeros(1, 4, 4)) is None


def test_histogram_distance_bounds() -> None:
    red, blue = torch.tensor([[0.9, 0.1, 0.1]]).expand(10, 3), torch.tensor([[0.1, 0.1, 0.9]]).expand(10, 3)
    h = hsv_histogram(red)
    assert h.sum() == pytest.approx(1.0) and h.shape == (12 * 4 * 4,)
    assert hellinger(h, h) == pytest.approx(0.0, abs=1e-6)
    assert hellinger(h, hsv_histogram(blue)) == pytest.approx(1.0)


def test_saturation_excess_on_ground_truth_renders() -> None:
    cams = ring_cameras(4, 15.0)
    gt = render_gt(parse_prompt("a green striped cone"), cams, 48, mode="albedo")
    same = saturation_from_renders(gt, gt)
    assert same["excess"] == pytest.approx(0.0, abs=1e-6) and same["over"] == 0.0
    assert same["histogram_distance"] == pytest.approx(0.0, abs=1e-6) and 0.3 < same["gt_mean"] < 0.9
    loud = {"rgb": saturate(gt["rgb"], 0.3), "mask": gt["mask"]}  # green body S 0.85 -> 0.95; stripes stay white
    over = saturation_from_renders(loud, gt)
    assert over["excess"] > 0.04 and over["over"] == over["excess"]
    dull = saturation_from_renders({"rgb": saturate(gt["rgb"], 3.0), "mask": gt["mask"]}, gt)
    assert dull["excess"] < -0.1 and dull["over"] == 0.0 and dull["histogram_distance"] > 0.2
    empty = saturation_from_renders({"rgb": gt["rgb"], "mask": torch.zeros_like(gt["mask"])}, gt)
    assert empty["mean"] is None and empty["excess"] is None and empty["histogram_distance"] is None
