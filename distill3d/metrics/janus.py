"""The Janus problem: faces that appear where the ground truth shows none (DreamFusion, Poole et al. 2022, sec. 5).

A 2D prior asked for "a ... with a face" tends to paint the face on every side it is viewed from. We detect the
toy world's face features -- dark, compact marks (two eyes and a mouth in ``FACE_COLOUR``) on the object -- in
albedo renders, and call a view *Janus* when the asset shows a face there and the ground truth from the same camera
does not. ``rate_back`` / ``rate_side`` are the fraction of back / side ring views that are Janus.

Face detection (per view): object pixels are ``mask > 0.5`` eroded by one pixel (anti-aliased rims are not
features); a pixel is *dark* when its CIELAB lightness L* < min(``max_lightness``, ``relative`` x the median L* of
the object); dark pixels are grouped into 8-connected components, and those covering at least ``min_fraction`` of
the object's pixels (and ``min_pixels``) are features. A face is present when at least two features are (a face
seen at an angle still shows an eye and the mouth, or both eyes; a single sliver at a grazing angle does not count).
The per-view ``score`` is the features' total area over the object area (0 = no face marks).

Checked on ground-truth renders (tests/test_metrics_janus.py): faces are found in front views and not in back
views of every shape. One toy-world subtlety: a flat torus seen from behind at 15 degrees of elevation shows the eyes
of its front half over the rim of the hole, so its ground truth really has a face in those views; Janus views are
counted against the ground truth for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from distill3d.cameras import Cameras, view_phrase
from distill3d.metrics.colour import rgb_to_lab


@dataclass(frozen=True)
class FaceDetector:
    """Thresholds of the dark-feature face detector (see the module docstring)."""

    max_lightness: float = 30.0  # L* above this is never a face feature
    relative: float = 0.6  # ... nor above this fraction of the object's median L* (dark bodies, e.g. blue)
    min_fraction: float = 0.005  # a feature covers at least this fraction of the object's pixels
    min_pixels: int = 4
    min_features: int = 2

    def features(self, rgb: torch.Tensor, mask: torch.Tensor) -> list[int]:
        """Areas (pixels) of the face features in one view. rgb (H, W, 3) in [0, 1], mask (H, W) coverage."""
        obj = (mask.detach().cpu() > 0.5).numpy()
        n_obj = int(obj.sum())
        if n_obj == 0:
            return []
        lightness = rgb_to_lab(rgb.detach().cpu())[..., 0].numpy()
        threshold = min(self.max_lightness, self.relative * float(np.median(lightness[obj])))
        dark = ndimage.binary_erosion(obj) & (lightness < threshold)
        labels, n = ndimage.label(dark, structure=np.ones((3, 3), bool))
        if n == 0:
            return []
        areas = ndimage.sum_labels(dark, labels, index=np.arange(1, n + 1))
        keep = max(self.min_pixels, self.min_fraction * n_obj)
        return sorted((int(a) for a in areas if a >= keep), reverse=True)

    def detect(self, rgb: torch.Tensor, mask: torch.Tensor) -> list[dict[str, Any]]:
        """Per view of rgb (B, H, W, 3) / mask (B, H, W): {"present": bool, "score": float, "n_features": int}."""
        out = []
        for b in range(rgb.shape[0]):
            areas = self.features(rgb[b], mask[b])
            n_obj = max(int((mask[b] > 0.5).sum()), 1)
            out.append({
                "present": len(areas) >= self.min_features,
                "score": float(sum(areas) / n_obj),
                "n_features": len(areas),
            })
        return out


def view_kinds(cams: Cameras, pole_elevation: float = 60.0) -> list[str]:
    """Kind of each camera: 'top' / 'bottom' beyond +-``pole_elevation`` degrees, else DreamFusion's
    'front' / 'side' / 'back' by azimuth (``cameras.view_phrase``, 45 degree front and back cones)."""
    kinds = []
    for az, el in zip(cams.azimuth.tolist(), cams.elevation.tolist()):
        if el > pole_elevation:
            kinds.append("top")
        elif el < -pole_elevation:
            kinds.append("bottom")
        else:
            kinds.append(view_phrase(az, el, overhead_threshold=90.0))
    return kinds


def _rate(flags: list[bool]) -> float | None:
    return float(np.mean(flags)) if flags else None


def janus_from_renders(
    pred: dict[str, torch.Tensor], gt: dict[str, torch.Tensor], kinds: list[str], applicable: bool = True,
    detector: FaceDetector = FaceDetector(),
) -> dict[str, Any]:
    """Janus rates from albedo renders of the asset (``pred``) and the ground truth (``gt``) from the same cameras.

    pred, gt: {"rgb": (B, H, W, 3), "mask": (B, H, W)}; kinds: B view kinds (see ``view_kinds``). ``applicable``
    (the prompt asks for a face) is reported as given; rates are computed either way (a face on a face-less prompt
    is an artefact too). Returns {applicable, rate_back, rate_side, rate (back and side views together; None when
    there are no such views), janus_views (indices), per_view: [{kind, pred_score, gt_score, pred_face, gt_face,
    janus}]}.
    """
    if len(kinds) != pred["rgb"].shape[0] or pred["rgb"].shape != gt["rgb"].shape:
        raise ValueError("pred, gt and kinds must describe the same views")
    p, g = detector.detect(pred["rgb"], pred["mask"]), detector.detect(gt["rgb"], gt["mask"])
    per_view = []
    for kind, pv, gv in zip(kinds, p, g):
        per_view.append({
            "kind": kind, "pred_score": pv["score"], "gt_score": gv["score"], "pred_face": pv["present"],
            "gt_face": gv["present"], "janus": bool(pv["present"] and not gv["present"]),
        })
    flags = {k: [v["janus"] for v in per_view if v["kind"] == k] for k in ("back", "side")}
    return {
        "applicable": bool(applicable),
        "rate_back": _rate(flags["back"]),
        "rate_side": _rate(flags["side"]),
        "rate": _rate(flags["back"] + flags["side"]),
        "janus_views": [i for i, v in enumerate(per_view) if v["janus"]],
        "per_view": per_view,
    }
