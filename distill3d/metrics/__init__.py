"""Evaluation metrics: silhouette IoU, CIELAB colour error and naming, asset-vs-ground-truth evaluation.

The full suite (IoU, colour, depth, Chamfer, Janus, saturation, sharpness, CLIP R-precision) is ``evaluate_asset``
/ ``evaluate_path`` in ``distill3d.metrics.suite``."""

from distill3d.metrics.colour import delta_e, nearest_colour_name, rgb_to_lab
from distill3d.metrics.evaluate import evaluate_mesh, evaluate_renders
from distill3d.metrics.silhouette import iou
from distill3d.metrics.suite import evaluate_asset, evaluate_path

__all__ = [
    "delta_e", "evaluate_asset", "evaluate_mesh", "evaluate_path", "evaluate_renders", "iou", "nearest_colour_name",
    "rgb_to_lab",
]
