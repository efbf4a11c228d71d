"""Does the multi-view prior draw one consistent object? Sample checks of 4-view samples against the toy world.

For each caption, ``per_caption`` 4-view samples are drawn (DDIM + classifier-free guidance, ``sample_images``) from
the cameras of a Janus ring: azimuths 0 (front), 90, 180 (back), 270, one elevation, radius 2.6, fov 40 -- one
MVDream camera group with offset 0. Each view is segmented from its solid background (the median colour of its border
pixels; a pixel is object when some channel differs from it by more than ``BACKGROUND_DISTANCE``) and checked:

* **face**: the project's ``FaceDetector`` on the view, against the ground truth rendered from the same camera (a
  view is Janus when the sample shows a face where the ground truth shows none); a face caption passes when its
  front view shows a face and no other view shows one the ground truth lacks;
* **colour**: the dominant toy colour of the object pixels (``dominant_colour``, CIEDE2000 vote);
* **shape**: the silhouette's IoU with every shape's ground-truth silhouette from *the same camera*; the best is the
  view's shape. A sample is *consistent* when its 4 views agree on colour and on shape, *right* when they agree with
  the caption; ``iou_true_shape`` is the mean IoU of each view with its caption's ground truth from that camera.
"""

from __future__ import annotations

import torch

from distill3d.cameras import spherical_cameras
from distill3d.metrics.evaluate import dominant_colour
from distill3d.metrics.janus import FaceDetector
from distill3d.metrics.silhouette import iou
from distill3d.priors.base import Conditioning, Prior
from distill3d.priors.sampling import sample_images
from distill3d.toyworld.render import render_gt
from distill3d.toyworld.vocab import SHAPES, ObjectSpec, parse_prompt

BACKGROUND_DISTANCE = 0.12
RING_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
RING_KINDS = ("front", "side", "back", "side")


def background_mask(images: torch.Tensor, distance: float = BACKGROUND_DISTANCE) -> torch.Tensor:
    """(B, 3, H, W) images on solid backgrounds -> (B, H, W) bool object masks: pixels farther than ``distance`` (max
    over channels) from the median colour of the image's one-pixel border."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]], dim=-1)
    bg = border.median(dim=-1).values  # (B, 3)
    return (images - bg[:, :, None, None]).abs().amax(dim=1) > distance


def check_multiview_samples(
    prior: Prior, captions: list[str], per_caption: int = 4, steps: int = 50, guidance_scale: float = 3.0,
    elevation: float = 15.0, seed: int = 0, detector: FaceDetector = FaceDetector(),
) -> tuple[torch.Tensor, dict]:
    """Draw ``per_caption`` 4-view samples of each caption (cameras: ``RING_AZIMUTHS`` at ``elevation``) and check
    them. Returns images (N, 4, 3, H, W) (N = captions x per_caption, views in ring order) and a JSON-able report:
    per sample and per caption results, and overall ``face_front_only`` (fraction of face-caption samples with the
    face on the front view only, judged against the ground truth), ``janus_views`` (fraction of face-caption non-front
    views with a face the ground truth lacks), ``face_front`` (front views showing a face), ``consistent`` / ``right``
    (fractions of all samples) and ``iou_true_shape`` (mean)."""
    views = max(int(getattr(prior, "views_per_sample", 1)), 1)
    if views != len(RING_AZIMUTHS):
        raise ValueError(f"check_multiview_samples needs a 4-view prior, got views_per_sample={views}")
    gen = torch.Generator().manual_seed(seed)
    n = len(captions) * per_caption
    ring = spherical_cameras(list(RING_AZIMUTHS), [elevation] * 4, radius=2.6, fov=40.0)
    cams = ring[list(range(4)) * n]
    prompts = [c for c in captions for _ in range(per_caption) for _ in range(4)]
    images = sample_images(prior, prompts, steps=steps, guidance_scale=guidance_scale, generator=gen,
                           cond=Conditioning(cameras=cams.to(prior.device))).cpu()
    size = images.shape[-1]
    masks = background_mask(images)
    rgb = images.permute(0, 2, 3, 1)
    faces = detector.detect(rgb, masks.float())
    templates = {s: render_gt(ObjectSpec(s), ring, size)["mask"] > 0.5 for s in SHAPES}  # (4, H, W) per shape
    gt_faces = {}
    rows = []
    for i in range(n):
        caption = prompts[4 * i]
        spec = parse_prompt(caption)
        if spec not in gt_faces:
            gt = render_gt(spec, ring, size, mode="shaded")
            gt_faces[spec] = [f["present"] for f in detector.detect(gt["rgb"], gt["mask"])]
        per_view = []
        for v in range(4):
            k = 4 * i + v
            m = masks[k]
            colour, _ = dominant_colour(rgb[k][m], spec.pattern == "striped")
            scores = {s: float(iou(m[None].float(), t[v][None].float())) for s, t in templates.items()}
            per_view.append({
                "kind": RING_KINDS[v], "colour": colour, "shape": max(scores, key=scores.get) if m.any() else None,
                "iou_true_shape": scores[spec.shape], "face": faces[k]["present"], "gt_face": gt_faces[spec][v],
                "face_score": faces[k]["score"],
            })
        colours, shapes = {p["colour"] for p in per_view}, {p["shape"] for p in per_view}
        janus = [p["face"] and not p["gt_face"] for p in per_view[1:]]
        rows.append({
            "caption": caption, "views": per_view,
            "consistent": len(colours) == 1 and len(shapes) == 1 and None not in colours | shapes,
            "right": colours == {spec.colour} and shapes == {spec.shape},
            "face_front": per_view[0]["face"], "janus_views": sum(janus),
            "face_front_only": bool(spec.face and per_view[0]["face"] and not any(janus)),
        })
    face_rows = [r for r in rows if parse_prompt(r["caption"]).face]
    per_caption_report = {}
    for c in captions:
        mine = [r for r in rows if r["caption"] == c]
        per_caption_report[c] = {
            "consistent": sum(r["consistent"] for r in mine) / len(mine),
            "right": sum(r["right"] for r in mine) / len(mine),
            "iou_true_shape": sum(p["iou_true_shape"] for r in mine for p in r["views"]) / (4 * len(mine)),
            "face_front": sum(r["face_front"] for r in mine) / len(mine),
            "janus_views": sum(r["janus_views"] for r in mine) / (3 * len(mine)),
        }
    report = {
        "consistent": sum(r["consistent"] for r in rows) / n,
        "right": sum(r["right"] for r in rows) / n,
        "colour_right_views": sum(p["colour"] == parse_prompt(r["caption"]).colour for r in rows for p in r["views"])
        / (4 * n),
        "shape_right_views": sum(p["shape"] == parse_prompt(r["caption"]).shape for r in rows for p in r["views"])
        / (4 * n),
        "iou_true_shape": sum(p["iou_true_shape"] for r in rows for p in r["views"]) / (4 * n),
        "face_front_only": sum(r["face_front_only"] for r in face_rows) / len(face_rows) if face_rows else None,
        "face_front": sum(r["face_front"] for r in face_rows) / len(face_rows) if face_rows else None,
        "janus_views": sum(r["janus_views"] for r in face_rows) / (3 * len(face_rows)) if face_rows else None,
        "gt_faces": {s.caption(): f for s, f in gt_faces.items()},
        "captions": per_caption_report, "samples": rows, "steps": steps, "guidance_scale": guidance_scale,
        "elevation": elevation,
    }
    return images.view(n, 4, *images.shape[1:]), report
