"""Stage `check_mv_prior`: does the multi-view prior draw one consistent object, face on the front only? 4-view
DDIM + CFG samples of (held-out) captions, checked against the toy world (distill3d.priors.multiview_checks).

Output: `samples.png` (one row per sample: front, side, back, side) and `sample_checks.json`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from distill3d.priors.multiview_training import MV_HELD_OUT
from stages.core.protocol import StageParams

NAME = "check_mv_prior"
INPUTS = ("prior",)


class Params(StageParams):
    captions: list[str] = Field(default_factory=lambda: list(MV_HELD_OUT), min_length=1)
    per_caption: int = Field(4, ge=1)
    steps: int = Field(50, ge=1)
    guidance_scale: float = Field(3.0, ge=0.0)
    elevation: float = Field(15.0, ge=-89.0, le=89.0)
    seed: int = 0


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import json

    from distill3d.priors.loading import load_prior
    from distill3d.priors.multiview_checks import RING_KINDS, check_multiview_samples
    from distill3d.viz.grid import save_grid

    prior = load_prior(inputs["prior"])
    images, report = check_multiview_samples(prior, params.captions, params.per_caption, params.steps,
                                             params.guidance_scale, params.elevation, seed=params.seed)
    labels = [f"{r['caption'].removeprefix('a ').removeprefix('an ')[:18]}" if v == 0 else RING_KINDS[v]
              for r in report["samples"] for v in range(4)]
    save_grid(images.flatten(0, 1).permute(0, 2, 3, 1), out / "samples.png", ncols=8, scale=4, labels=labels)
    (out / "sample_checks.json").write_text(json.dumps(report, indent=2))
    keys = ("consistent", "right", "colour_right_views", "shape_right_views", "iou_true_shape", "face_front_only",
            "face_front", "janus_views")
    return {k: report[k] for k in keys}
