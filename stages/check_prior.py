"""Stage `check_prior`: does a toy-world prior draw what it is told? DDIM + CFG samples of captions held out of its
training, checked against the toy world (distill3d.priors.toy_checks): colour and shape, stripe energy (against
ground truth and against the caption without stripes) and face placement (front views against back views).

Works for the pixel prior (`check_prior` section of params.yaml) and the latent prior (`--section
check_latent_prior --in prior=models/toy_latent_prior`). Output: `samples.png` (the colour/shape samples, then 8 of
each stripe and face set) and `sample_checks.json` (per-sample results, the bars and whether each is met).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from distill3d.priors.toy_checks import CheckBars
from distill3d.priors.toy_training import DEFAULT_HELD_OUT
from stages.core.protocol import StageParams

NAME = "check_prior"
INPUTS = ("prior",)


def _held_out(striped: bool | None = None, face: bool | None = None) -> list[str]:
    words = [c for c in DEFAULT_HELD_OUT if (striped is None or ("striped" in c) == striped)
             and (face is None or ("face" in c) == face)]
    return words


class Params(StageParams):
    captions: list[str] = Field(default_factory=lambda: list(DEFAULT_HELD_OUT), min_length=1)  # colour and shape
    per_caption: int = Field(4, ge=1)
    stripe_captions: list[str] = Field(default_factory=lambda: _held_out(striped=True))
    face_captions: list[str] = Field(default_factory=lambda: _held_out(face=True))
    samples: int = Field(16, ge=1)  # per stripe / face caption and kind (striped, plain; front, back)
    steps: int = Field(50, ge=1)
    guidance_scale: float = Field(3.0, ge=0.0)
    seed: int = 0
    bars: CheckBars = Field(default_factory=CheckBars)


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import json

    from distill3d.priors.loading import load_prior
    from distill3d.priors.toy_checks import CheckConfig, check_grid_images, run_checks
    from distill3d.viz.grid import save_grid

    prior = load_prior(inputs["prior"])
    images, report = run_checks(prior, CheckConfig.model_validate(params.model_dump()))
    cells, labels = check_grid_images(images, report)
    save_grid(cells, out / "samples.png", ncols=8, scale=max(1, 128 // cells.shape[1]), labels=labels)
    (out / "sample_checks.json").write_text(json.dumps(report, indent=2))
    cs = report["colour_shape"]
    metrics = {k: cs[k] for k in ("colour_accuracy", "shape_accuracy", "colour_and_shape_accuracy",
                                  "caption_shape_accuracy")}
    metrics.update({name: bar["value"] for name, bar in report["bars"].items() if name != "colour_and_shape_ok"})
    metrics["all_bars_met"] = report["all_met"]
    return metrics
