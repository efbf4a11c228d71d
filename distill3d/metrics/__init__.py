"""Evaluation metrics: silhouette IoU, CIELAB colour error and naming, depth, Chamfer, Janus rate, saturation,
stripe sharpness, CLIP R-precision; ``suite.evaluate_asset`` runs them all against the toy world's ground truth.

Import the modules by name; this file imports nothing (see distill3d/fields/__init__.py)."""
