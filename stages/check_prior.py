"""Stage `check_prior`: does the prior draw what it is told? DDIM + CFG samples of (held-out) captions, with their
colour and shape checked against the toy world (distill3d.priors.toy_checks).

Output: `samples.png` (one row per caption) and `sample_checks.json` (per-sample and per-caption results).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from distill3d.priors.toy_training import DEFAULT_HELD_OUT
from stages.core.protocol import StageParams

NAME = "check_prior"
INPUTS = ("prior",)


class Params(StageParams):
    captions: list[str] = Field(default_factory=lambda: list(DEFAULT_HELD_OUT), min_length=1)
    per_caption: int = Field(4, ge=1)
    steps: int = Field(50, ge=1)
    guidance_scale: float = Field(3.0, ge=0.0)
    seed: int = 0


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import json

    from distill3d.priors.loading import load_prior
    from distill3d.priors.toy_checks import check_samples
    from distill3d.viz.grid import save_grid

    prior = load_prior(inputs["prior"])
    images, report = check_samples(prior, params.captions, params.per_caption, params.steps,
                                   params.guidance_scale, seed=params.seed)
    save_grid(images.permute(0, 2, 3, 1), out / "samples.png", ncols=params.per_caption, scale=4,
              labels=[r["prompt"].split(",")[0] for r in report["samples"]])
    (out / "sample_checks.json").write_text(json.dumps(report, indent=2))
    return {k: report[k] for k in ("colour_accuracy", "shape_accuracy", "caption_shape_accuracy")}
