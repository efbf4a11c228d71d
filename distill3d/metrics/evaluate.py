"""Score an asset against the toy world's ground truth: silhouette IoU and colour, over a fixed ring of views.

Both the asset and the ground truth are rendered in albedo mode (no lighting) from ``ring_cameras(n_views,
elevation)``, so colours compare directly. Every value returned is JSON-able (floats, lists, str, bool, None).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from distill3d.metrics.colour import delta_e, nearest_colour_index
from distill3d.metrics.silhouette import binarize, iou
from distill3d.mesh.types import TexturedMesh
from distill3d.toyworld.vocab import COLOURS, FACE_COLOUR, STRIPE_COLOUR, ObjectSpec, parse_prompt

# Pseudo colours for pixel labelling: texture details that are not the object's colour.
_STRIPE, _FACE = "<stripe>", "<face>"
MIN_BODY_FRACTION = 0.1  # a striped object whose non-white pixels are fewer than this is called white


def dominant_colour(pixels: torch.Tensor, striped: bool) -> tuple[str | None, torch.Tensor | None]:
    """Name the colour of an object from its albedo pixels.

    pixels: (N, 3) sRGB of object pixels. Each pixel is labelled with its nearest toy colour (CIEDE2000), face
    features (black) are ignored, and for striped objects so are the white stripes (labels white/stripe) unless
    almost nothing else is left (a white striped object). Returns (the most common remaining label, (3,) mean
    RGB of the pixels carrying the remaining labels), or (None, None) with no pixels.
    """
    if pixels.shape[0] == 0:
        return None, None
    palette = dict(COLOURS)
    palette[_FACE] = FACE_COLOUR
    if striped:
        palette[_STRIPE] = STRIPE_COLOUR
    names, idx = nearest_colour_index(pixels, palette)
    labels = [names[i] for i in idx.tolist()]
    body = [i for i, n in enumerate(labels) if n != _FACE]
    if striped:
        coloured = [i for i in body if labels[i] not in ("white", _STRIPE)]
        if len(coloured) >= MIN_BODY_FRACTION * max(len(body), 1):
            body = coloured
        else:  # a white striped object: stripes and body are both white
            for i in body:
                labels[i] = "white"
    if not body:
        return None, None
    name = Counter(labels[i] for i in body).most_common(1)[0][0]
    return name, pixels[body].float().mean(0)


def evaluate_renders(pred: dict[str, torch.Tensor], gt: dict[str, torch.Tensor], spec: ObjectSpec) -> dict[str, Any]:
    """Compare an asset's albedo renders with the ground truth's from the same cameras.

    pred, gt: dicts with "rgb" (B, H, W, 3) in [0, 1] and "mask" (B, H, W) coverage. Returns iou_mean,
    iou_per_view (B floats), colour_error_lab (mean ΔE76 over pixels covered in both, None if there are none),
    mean_colour_rgb (3 floats or None), colour_name (str or None), colour_correct, n_views, size.
    """
    pm, gm = binarize(pred["mask"].detach().cpu()), binarize(gt["mask"].detach().cpu())
    prgb, grgb = pred["rgb"].detach().cpu().float(), gt["rgb"].detach().cpu().float()
    if pm.shape != gm.shape or prgb.shape != grgb.shape:
        raise ValueError(f"render shapes differ: pred {tuple(prgb.shape)} vs gt {tuple(grgb.shape)}")
    per_view = iou(pm, gm)
    both = pm & gm
    colour_error = float(delta_e(prgb[both], grgb[both]).mean()) if both.any() else None
    name, mean_rgb = dominant_colour(prgb[pm], striped=spec.pattern == "striped")
    return {
        "iou_mean": float(per_view.mean()),
        "iou_per_view": [float(v) for v in per_view],
        "colour_error_lab": colour_error,
        "mean_colour_rgb": None if mean_rgb is None else [float(v) for v in mean_rgb],
        "colour_name": name,
        "colour_correct": name == spec.colour,
        "n_views": int(pm.shape[0]),
        "size": int(pm.shape[-1]),
    }


def evaluate_mesh(
    mesh: TexturedMesh, prompt: str, n_views: int = 8, size: int = 128, elevation: float = 15.0
) -> dict[str, Any]:
    """Render ``mesh`` and the ground truth of ``prompt`` (parsed by ``parse_prompt``) from ``n_views`` ring
    cameras at ``elevation`` degrees, ``size`` pixels square, in albedo mode; see ``evaluate_renders``."""
    from distill3d.cameras import ring_cameras
    from distill3d.mesh.render import render_mesh
    from distill3d.toyworld.render import render_gt

    spec = parse_prompt(prompt)
    cams = ring_cameras(n_views, elevation, device=mesh.vertices.device)
    with torch.no_grad():
        pred = render_mesh(mesh, cams, size, mode="albedo")
        gt = render_gt(spec, cams, size, mode="albedo")
    return evaluate_renders(pred, gt, spec)
