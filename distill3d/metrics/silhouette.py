"""Silhouette agreement between a render and the ground truth."""

from __future__ import annotations

import torch


def binarize(mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(..., H, W) coverage in [0, 1] (or bool) -> bool mask ``coverage > threshold`` (bool input passes through)."""
    return mask if mask.dtype == torch.bool else mask > threshold


def iou(pred_mask: torch.Tensor, gt_mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Intersection over union of silhouettes, per view.

    pred_mask, gt_mask: (B, H, W) (or (H, W)) coverage in [0, 1] or bool. Returns (B,) float32 (a 0-d tensor for
    (H, W) input). Two empty masks agree perfectly: IoU 1.
    """
    if pred_mask.shape != gt_mask.shape:
        raise ValueError(f"mask shapes differ: pred {tuple(pred_mask.shape)} vs gt {tuple(gt_mask.shape)}")
    p, g = binarize(pred_mask, threshold), binarize(gt_mask.to(pred_mask.device), threshold)
    inter = (p & g).flatten(-2).sum(-1).float()
    union = (p | g).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
