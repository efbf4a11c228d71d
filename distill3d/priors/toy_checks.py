"""Does the toy prior draw what it is told? Sample checks against the toy world's ground truth.

For each caption, DDIM samples (front views, classifier-free guidance) are segmented from the white background;
the object's colour is named (CIEDE2000 vote) and its silhouette is matched against ground-truth silhouettes of
every shape seen from front cameras. A caption's samples "have the right shape" when, averaged over its samples,
they match that shape's silhouettes better than any other shape's.
"""

from __future__ import annotations

import torch

from distill3d.cameras import spherical_cameras
from distill3d.metrics.evaluate import dominant_colour
from distill3d.metrics.silhouette import iou
from distill3d.priors.base import Prior
from distill3d.priors.sampling import sample_images
from distill3d.toyworld.render import render_gt
from distill3d.toyworld.vocab import SHAPES, ObjectSpec, parse_prompt

BACKGROUND_DISTANCE = 0.12  # a pixel is object if some channel is this far below the white background


def object_mask(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images on white -> (B, H, W) bool object masks."""
    return (1.0 - images).amax(dim=1) > BACKGROUND_DISTANCE


def shape_templates(size: int) -> dict[str, torch.Tensor]:
    """Ground-truth silhouettes (K, H, W) of each shape from a spread of front-view cameras (the training range of
    azimuth, elevation and distance)."""
    az, el, r = zip(*[(a, e, r) for a in (-30.0, 0.0, 30.0) for e in (0.0, 20.0, 40.0) for r in (2.4, 2.6, 2.8)])
    cams = spherical_cameras(list(az), list(el), radius=list(r))
    return {s: render_gt(ObjectSpec(s), cams, size)["mask"] > 0.5 for s in SHAPES}


def shape_scores(mask: torch.Tensor, templates: dict[str, torch.Tensor]) -> dict[str, float]:
    """{shape: IoU of ``mask`` (H, W) with that shape's best-matching template silhouette}."""
    return {s: float(iou(mask[None].expand_as(t).float(), t.float()).max()) for s, t in templates.items()}


def check_samples(
    prior: Prior, captions: list[str], per_caption: int = 4, steps: int = 50, guidance_scale: float = 3.0,
    seed: int = 0,
) -> tuple[torch.Tensor, dict]:
    """Sample ``per_caption`` front views of each caption; return the images (N, 3, H, W) and a JSON-able report
    with per-caption colour and shape accuracy and the overall fractions."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [f"{c}, front view" for c in captions for _ in range(per_caption)]
    images = sample_images(prior, prompts, steps=steps, guidance_scale=guidance_scale, generator=gen)
    templates = shape_templates(images.shape[-1])
    masks = object_mask(images)
    rows = []
    for i, prompt in enumerate(prompts):
        spec = parse_prompt(prompt)
        pixels = images[i].permute(1, 2, 0)[masks[i]]
        colour, _ = dominant_colour(pixels, spec.pattern == "striped")
        scores = shape_scores(masks[i], templates) if masks[i].any() else {}
        shape = max(scores, key=scores.get) if scores else None
        rows.append({"prompt": prompt, "colour": colour, "shape": shape, "shape_scores": scores,
                     "colour_ok": colour == spec.colour, "shape_ok": shape == spec.shape,
                     "background_fraction": float(1 - masks[i].float().mean())})
    per_caption = {}
    for caption in captions:
        mine = [r for r in rows if r["prompt"].startswith(caption + ",") and r["shape_scores"]]
        mean = {s: sum(r["shape_scores"][s] for r in mine) / max(1, len(mine)) for s in SHAPES}
        per_caption[caption] = {"mean_shape_scores": mean, "best_shape": max(mean, key=mean.get),
                                "shape_ok": max(mean, key=mean.get) == parse_prompt(caption).shape}
    report = {
        "colour_accuracy": sum(r["colour_ok"] for r in rows) / len(rows),
        "shape_accuracy": sum(r["shape_ok"] for r in rows) / len(rows),
        "caption_shape_accuracy": sum(c["shape_ok"] for c in per_caption.values()) / len(per_caption),
        "captions": per_caption, "samples": rows, "steps": steps, "guidance_scale": guidance_scale,
    }
    return images, report
