"""Does a toy-world prior draw what it is told? Sample checks against the toy world's ground truth.

Works for any prior trained on the toy world (the 32x32 pixel ``ToyPrior``, the 64x64 latent prior loaded as a
``StableDiffusionPrior``): DDIM + classifier-free guidance samples of captions held out of training are compared with
ground-truth renders seen through the same measurements. The priors draw objects over random solid backgrounds, so
every measurement first segments the object: the background colour is the median of the image border
(``estimate_background``) and object pixels are those far enough from it (``object_mask``).

* **colour and shape** (``check_samples``): each sample's object colour is named (CIEDE2000 vote, stripes and face
  features set aside) and its silhouette matched against ground-truth silhouettes of every shape from front cameras.
* **stripes** (``stripe_check``): the stripe energy of samples of a striped caption, against ground-truth renders of
  it and against samples of the same caption without stripes. Stripe energy (``stripe_energy``) is the project's
  stripe measure (``distill3d.metrics.sharpness``: the zero-mean row profile of CIELAB lightness over the object)
  taken per image, without a paired ground-truth view: the profile's spectral energy above the two lowest
  frequencies (where shading lives), over the number of rows squared (so it does not grow with object size).
* **faces** (``face_check``): the fraction of samples of "<caption>, front view" and of "<caption>, back view" in
  which ``distill3d.metrics.janus.FaceDetector`` finds a face (the face is on the object's front).

``run_checks`` runs all three and compares the results with the bars in ``CheckBars``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from distill3d.cameras import CameraDistribution, Cameras, sample_cameras, spherical_cameras
from distill3d.metrics.colour import rgb_to_lab
from distill3d.metrics.evaluate import dominant_colour
from distill3d.metrics.janus import FaceDetector
from distill3d.metrics.sharpness import row_profile
from distill3d.metrics.silhouette import iou
from distill3d.priors.base import Prior
from distill3d.priors.sampling import sample_images
from distill3d.toyworld.dataset import composite, random_backgrounds
from distill3d.toyworld.render import render_gt_batch
from distill3d.toyworld.vocab import SHAPES, ObjectSpec, parse_prompt

BACKGROUND_DISTANCE = 0.12  # a pixel is object if some channel is this far from the background colour
BORDER = 2  # pixels of the image border the background colour is estimated from
STRIPE_MIN_BIN = 2  # row-profile frequencies below this are shading, not stripes
MAX_HOLE_FRACTION = 0.05  # enclosed background-coloured patches smaller than this (of the object) are object


# ------------------------------------------------------------------------------------------------ segmentation
def estimate_background(images: torch.Tensor, border: int = BORDER) -> torch.Tensor:
    """(B, 3, H, W) images -> (B, 3) background colours: the per-channel median of the ``border``-pixel frame."""
    b, c, h, w = images.shape
    frame = torch.ones(h, w, dtype=torch.bool)
    frame[border:h - border, border:w - border] = False
    return images[:, :, frame].median(dim=-1).values


def object_mask(images: torch.Tensor, background: torch.Tensor | None = None, clean: bool = True,
                threshold: float = BACKGROUND_DISTANCE, max_hole_fraction: float = MAX_HOLE_FRACTION) -> torch.Tensor:
    """(B, 3, H, W) images -> (B, H, W) bool object masks: pixels with some channel more than ``threshold`` from
    the background colour ((B, 3), default ``estimate_background``). ``clean``: keep only the largest 8-connected
    part (specks of noise are not the object) and fill its holes smaller than ``max_hole_fraction`` of it (face
    features as dark as a dark background), not larger ones (a torus's hole)."""
    if background is None:
        background = estimate_background(images)
    masks = (images - background[:, :, None, None]).abs().amax(dim=1) > threshold
    if not clean:
        return masks
    out = []
    for m in masks.numpy():
        labels, n = ndimage.label(m, structure=np.ones((3, 3), bool))
        if n > 1:
            sizes = ndimage.sum_labels(m, labels, index=np.arange(1, n + 1))
            m = labels == 1 + int(np.argmax(sizes))
        holes = ndimage.binary_fill_holes(m) & ~m
        hole_labels, n_holes = ndimage.label(holes)
        if n_holes:
            sizes = ndimage.sum_labels(holes, hole_labels, index=np.arange(1, n_holes + 1))
            small = np.flatnonzero(sizes < max_hole_fraction * max(int(m.sum()), 1)) + 1
            m = m | np.isin(hole_labels, small)
        out.append(torch.from_numpy(m))
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------- ground truth
def view_cameras(n: int, view: str, generator: torch.Generator) -> Cameras:
    """``n`` random training-distribution cameras inside DreamFusion's ``view`` cone ("front": azimuth within 45
    degrees of +Z, "back": of -Z; elevation and distance as in training, no overhead views)."""
    centre = {"front": 0.0, "back": 180.0}[view]
    dist = replace(CameraDistribution(), azimuth=(centre - 45.0, centre + 45.0), overhead_probability=0.0)
    return sample_cameras(n, dist, generator=generator)


def ground_truth_views(spec: ObjectSpec, view: str, n: int, size: int, seed: int = 0,
                       white_probability: float = 0.1) -> torch.Tensor:
    """(n, 3, size, size) renders of ``spec`` from random ``view`` cameras over random solid backgrounds (the
    training images' distribution)."""
    gen = torch.Generator().manual_seed(seed)
    cams = view_cameras(n, view, gen)
    out = render_gt_batch([spec] * n, cams, size, ssaa=2, background=0.0)
    bg = random_backgrounds(n, gen, white_probability)
    return composite(out["rgb"].permute(0, 3, 1, 2), out["mask"][:, None], bg).clamp(0, 1)


def shape_templates(size: int) -> dict[str, torch.Tensor]:
    """Ground-truth silhouettes (K, H, W) of each shape from a spread of front-view cameras (the training range of
    azimuth, elevation, distance and field of view)."""
    az, el, r, fov = zip(*[(a, e, r, f) for a in (-30.0, 0.0, 30.0) for e in (0.0, 20.0, 40.0)
                           for r in (2.4, 2.6, 2.8) for f in (38.0, 42.0)])
    cams = spherical_cameras(list(az), list(el), radius=list(r), fov=list(fov))
    return {s: render_gt_batch([ObjectSpec(s)] * len(cams), cams, size)["mask"] > 0.5 for s in SHAPES}


def shape_scores(mask: torch.Tensor, templates: dict[str, torch.Tensor]) -> dict[str, float]:
    """{shape: IoU of ``mask`` (H, W) with that shape's best-matching template silhouette}."""
    return {s: float(iou(mask[None].expand_as(t).float(), t.float()).max()) for s, t in templates.items()}


# ---------------------------------------------------------------------------------------------------- sampling
def sample_shape(prior: Prior) -> tuple[int, int, int]:
    """(C, h, w) of the prior's model space (pixels, or a VAE's latents)."""
    if prior.space == "latent":
        f = getattr(prior, "vae_scale_factor", 8)
        return (int(getattr(prior, "latent_channels", 4)), prior.resolution // f, prior.resolution // f)
    return (3, prior.resolution, prior.resolution)


def draw(prior: Prior, prompts: list[str], steps: int, guidance_scale: float, seed: int,
         batch: int = 32) -> torch.Tensor:
    """DDIM + CFG samples (N, 3, R, R) in [0, 1] of ``prompts``, in batches, reproducible for a seed."""
    gen = torch.Generator().manual_seed(seed)
    out = [sample_images(prior, prompts[i:i + batch], steps=steps, guidance_scale=guidance_scale, generator=gen,
                         shape=sample_shape(prior)).cpu() for i in range(0, len(prompts), batch)]
    return torch.cat(out)


# -------------------------------------------------------------------------------------------- colour and shape
def colour_shape_rows(images: torch.Tensor, prompts: list[str]) -> list[dict]:
    """Per image (N, 3, H, W) of ``prompts``: named colour, best-matching shape and whether both are right."""
    templates = shape_templates(images.shape[-1])
    background = estimate_background(images)
    masks = object_mask(images, background)
    rows = []
    for i, prompt in enumerate(prompts):
        spec = parse_prompt(prompt)
        pixels = images[i].permute(1, 2, 0)[masks[i]]
        colour, _ = dominant_colour(pixels, spec.pattern == "striped")
        scores = shape_scores(masks[i], templates) if masks[i].any() else {}
        shape = max(scores, key=scores.get) if scores else None
        rows.append({"prompt": prompt, "colour": colour, "shape": shape, "shape_scores": scores,
                     "colour_ok": colour == spec.colour, "shape_ok": shape == spec.shape,
                     "background_rgb": [round(float(v), 3) for v in background[i]],
                     "background_fraction": float(1 - masks[i].float().mean())})
    return rows


def check_samples(
    prior: Prior, captions: list[str], per_caption: int = 4, steps: int = 50, guidance_scale: float = 3.0,
    seed: int = 0,
) -> tuple[torch.Tensor, dict]:
    """Sample ``per_caption`` front views of each caption; return the images (N, 3, H, W) and a JSON-able report
    with per-sample and per-caption colour and shape results and the overall fractions."""
    prompts = [f"{c}, front view" for c in captions for _ in range(per_caption)]
    images = draw(prior, prompts, steps, guidance_scale, seed)
    rows = colour_shape_rows(images, prompts)
    per_caption_report = {}
    for caption in captions:
        mine = [r for r in rows if r["prompt"].startswith(caption + ",") and r["shape_scores"]]
        mean = {s: sum(r["shape_scores"][s] for r in mine) / max(1, len(mine)) for s in SHAPES}
        per_caption_report[caption] = {"mean_shape_scores": mean, "best_shape": max(mean, key=mean.get),
                                       "shape_ok": max(mean, key=mean.get) == parse_prompt(caption).shape}
    n_both = sum(r["colour_ok"] and r["shape_ok"] for r in rows)
    report = {
        "n_samples": len(rows), "n_colour_and_shape_ok": n_both,
        "colour_accuracy": sum(r["colour_ok"] for r in rows) / len(rows),
        "shape_accuracy": sum(r["shape_ok"] for r in rows) / len(rows),
        "colour_and_shape_accuracy": n_both / len(rows),
        "caption_shape_accuracy": sum(c["shape_ok"] for c in per_caption_report.values()) / len(per_caption_report),
        "captions": per_caption_report, "samples": rows, "steps": steps, "guidance_scale": guidance_scale,
    }
    return images, report


# ------------------------------------------------------------------------------------------------------ stripes
def stripe_energy(images: torch.Tensor, masks: torch.Tensor | None = None, min_bin: int = STRIPE_MIN_BIN) -> list[float]:
    """Per image (N, 3, H, W) in [0, 1] with object masks (N, H, W) (default ``object_mask``):
    energy of the zero-mean lightness row profile (``distill3d.metrics.sharpness.row_profile``) at frequencies
    >= ``min_bin``, divided by the number of rows squared. NaN when the object spans fewer than 4 rows."""
    if masks is None:
        masks = object_mask(images)
    lightness = rgb_to_lab(images.permute(0, 2, 3, 1))[..., 0].numpy()
    out = []
    for b in range(images.shape[0]):
        profile = row_profile(lightness[b], masks[b].numpy())
        if len(profile) < 4:
            out.append(float("nan"))
            continue
        power = np.abs(np.fft.rfft(profile)) ** 2
        out.append(float(power[min_bin:].sum()) / len(profile) ** 2)
    return out


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def stripe_check(prior: Prior, caption: str, n: int = 16, steps: int = 50, guidance_scale: float = 3.0,
                 seed: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """Stripe energy of ``n`` front-view samples of a striped ``caption``, of ``n`` ground-truth front views of it
    and of ``n`` samples of the caption without "striped". Returns images {"striped", "plain", "ground_truth"} and
    the report (mean energies and the two ratios)."""
    spec = parse_prompt(caption)
    if spec.pattern != "striped":
        raise ValueError(f"stripe_check needs a striped caption, got {caption!r}")
    plain_caption = replace(spec, pattern="plain").caption()
    images = {
        "striped": draw(prior, [f"{caption}, front view"] * n, steps, guidance_scale, seed),
        "plain": draw(prior, [f"{plain_caption}, front view"] * n, steps, guidance_scale, seed + 1),
        "ground_truth": ground_truth_views(spec, "front", n, prior.resolution, seed=seed + 2),
    }
    energy = {k: stripe_energy(v) for k, v in images.items()}
    mean = {k: _mean(v) for k, v in energy.items()}
    ratio = lambda a, b: None if a is None or not b else a / b  # noqa: E731
    return images, {
        "caption": caption, "plain_caption": plain_caption, "n": n,
        "energy_striped": mean["striped"], "energy_plain": mean["plain"], "energy_ground_truth": mean["ground_truth"],
        "ratio_to_ground_truth": ratio(mean["striped"], mean["ground_truth"]),
        "ratio_to_plain": ratio(mean["striped"], mean["plain"]),
        "ground_truth_ratio_to_plain": ratio(mean["ground_truth"], mean["plain"]),
        "per_image": {k: [round(v, 3) for v in e] for k, e in energy.items()},
    }


# -------------------------------------------------------------------------------------------------------- faces
def face_rate(images: torch.Tensor, detector: FaceDetector = FaceDetector()) -> tuple[float, list[bool]]:
    """Fraction of images (N, 3, H, W) in which ``detector`` finds a face on the segmented object."""
    masks = object_mask(images).float()
    found = [d["present"] for d in detector.detect(images.permute(0, 2, 3, 1), masks)]
    return sum(found) / len(found), found


def face_check(prior: Prior, caption: str, n: int = 16, steps: int = 50, guidance_scale: float = 3.0,
               seed: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """Face detections in ``n`` samples of "<caption>, front view" and of "<caption>, back view", and for reference
    in ``n`` ground-truth renders from front and from back cameras."""
    spec = parse_prompt(caption)
    if not spec.face:
        raise ValueError(f"face_check needs a caption with a face, got {caption!r}")
    images = {
        "front": draw(prior, [f"{caption}, front view"] * n, steps, guidance_scale, seed),
        "back": draw(prior, [f"{caption}, back view"] * n, steps, guidance_scale, seed + 1),
        "ground_truth_front": ground_truth_views(spec, "front", n, prior.resolution, seed=seed + 2),
        "ground_truth_back": ground_truth_views(spec, "back", n, prior.resolution, seed=seed + 3),
    }
    rates = {k: face_rate(v) for k, v in images.items()}
    return images, {
        "caption": caption, "n": n,
        "front_rate": rates["front"][0], "back_rate": rates["back"][0],
        "ground_truth_front_rate": rates["ground_truth_front"][0],
        "ground_truth_back_rate": rates["ground_truth_back"][0],
        "per_image": {k: v[1] for k, v in rates.items()},
    }


# ------------------------------------------------------------------------------------------------- all of them
class CheckBars(BaseModel):
    """What a toy prior's samples must reach."""

    model_config = ConfigDict(extra="forbid")

    colour_and_shape_ok: float = Field(15 / 16, ge=0, le=1)  # fraction of the colour/shape samples
    stripe_ratio_to_ground_truth: float = 0.5
    stripe_ratio_to_plain: float = 3.0
    face_front_rate: float = 0.8  # at least
    face_back_rate: float = 0.1  # at most


class CheckConfig(BaseModel):
    """Captions and sampling of ``run_checks`` (the `check_prior` stage's params)."""

    model_config = ConfigDict(extra="forbid")

    captions: list[str] = Field(min_length=1)  # colour and shape
    per_caption: int = Field(4, ge=1)
    stripe_captions: list[str] = Field(default_factory=list)
    face_captions: list[str] = Field(default_factory=list)
    samples: int = Field(16, ge=1)  # per stripe / face caption and kind
    steps: int = Field(50, ge=1)
    guidance_scale: float = Field(3.0, ge=0.0)
    seed: int = 0
    bars: CheckBars = Field(default_factory=CheckBars)


def run_checks(prior: Prior, cfg: CheckConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """Colour/shape, stripe and face checks; returns the sample images by name and the report with ``bars``
    (each: value, bar, met) and ``all_met``."""
    images, report = {}, {}
    images["colour_shape"], report["colour_shape"] = check_samples(
        prior, cfg.captions, cfg.per_caption, cfg.steps, cfg.guidance_scale, cfg.seed)
    bars = {"colour_and_shape_ok": {"value": report["colour_shape"]["colour_and_shape_accuracy"],
                                    "bar": cfg.bars.colour_and_shape_ok, "at_least": True}}
    report["stripes"], report["faces"] = [], []
    for i, caption in enumerate(cfg.stripe_captions):
        imgs, rep = stripe_check(prior, caption, cfg.samples, cfg.steps, cfg.guidance_scale, cfg.seed + 100 + 10 * i)
        images.update({f"stripes/{caption}/{k}": v for k, v in imgs.items()})
        report["stripes"].append(rep)
        bars[f"stripe_ratio_to_ground_truth: {caption}"] = {
            "value": rep["ratio_to_ground_truth"], "bar": cfg.bars.stripe_ratio_to_ground_truth, "at_least": True}
        bars[f"stripe_ratio_to_plain: {caption}"] = {
            "value": rep["ratio_to_plain"], "bar": cfg.bars.stripe_ratio_to_plain, "at_least": True}
    for i, caption in enumerate(cfg.face_captions):
        imgs, rep = face_check(prior, caption, cfg.samples, cfg.steps, cfg.guidance_scale, cfg.seed + 200 + 10 * i)
        images.update({f"faces/{caption}/{k}": v for k, v in imgs.items()})
        report["faces"].append(rep)
        bars[f"face_front_rate: {caption}"] = {"value": rep["front_rate"], "bar": cfg.bars.face_front_rate,
                                               "at_least": True}
        bars[f"face_back_rate: {caption}"] = {"value": rep["back_rate"], "bar": cfg.bars.face_back_rate,
                                              "at_least": False}
    for b in bars.values():
        v = b["value"]
        b["met"] = v is not None and (v >= b["bar"] if b["at_least"] else v <= b["bar"])
    report["bars"] = bars
    report["all_met"] = all(b["met"] for b in bars.values())
    return images, report


def check_grid_images(images: dict[str, torch.Tensor], report: dict, per_row: int = 8) -> tuple[torch.Tensor, list[str]]:
    """The images of ``run_checks`` as one grid's cells ((N, H, W, 3), labels): the colour/shape samples, then
    ``per_row`` of each stripe and face set (samples, plain samples, ground truth; front, back, ground truth)."""
    cells, labels = [images["colour_shape"]], [r["prompt"].split(",")[0] for r in report["colour_shape"]["samples"]]
    for name, imgs in images.items():
        if name == "colour_shape":
            continue
        kind, caption, what = name.split("/")
        cells.append(imgs[:per_row])
        short = {"striped": caption, "plain": "no stripes", "ground_truth": "ground truth",
                 "front": "front view", "back": "back view", "ground_truth_front": "GT front",
                 "ground_truth_back": "GT back"}[what]
        labels += [short] * len(imgs[:per_row])
    return torch.cat(cells).permute(0, 2, 3, 1), labels
