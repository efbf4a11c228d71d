"""Silhouette IoU on synthetic masks."""

import pytest
import torch

from distill3d.metrics.silhouette import iou


def _box(h: int, w: int, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    m = torch.zeros(h, w)
    m[r0:r1, c0:c1] = 1.0
    return m


def test_iou_per_view_known_values() -> None:
    a = torch.stack([_box(8, 8, 0, 4, 0, 4), _box(8, 8, 0, 4, 0, 4), _box(8, 8, 0, 4, 0, 4)])
    b = torch.stack([_box(8, 8, 0, 4, 0, 4), _box(8, 8, 4, 8, 4, 8), _box(8, 8, 0, 4, 2, 6)])
    out = iou(a, b)
    assert out.shape == (3,)
    # identical, disjoint, half-shifted: 8 shared of 24 covered
    assert torch.allclose(out, torch.tensor([1.0, 0.0, 8 / 24]))


def test_iou_thresholds_fractional_coverage_and_bool_masks() -> None:
    pred = torch.tensor([[0.4, 0.6], [0.9, 0.0]])[None]
    gt = torch.tensor([[True, True], [True, False]])[None]
    assert torch.allclose(iou(pred, gt), torch.tensor([2 / 3]))
    assert torch.allclose(iou(pred, gt, threshold=0.3), torch.tensor([1.0]))


def test_iou_empty_masks_agree_and_shape_mismatch_raises() -> None:
    empty = torch.zeros(2, 4, 4)
    assert torch.equal(iou(empty, empty), torch.ones(2))
    assert iou(torch.zeros(4, 4), torch.ones(4, 4)).shape == ()
    with pytest.raises(ValueError, match="shapes differ"):
        iou(torch.zeros(1, 4, 4), torch.zeros(1, 5, 5))
