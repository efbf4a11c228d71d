"""Stage `train_prior`: train the toy-world prior and check its samples.

Output (committed to git; DVC `cache: false`): the prior folder (see distill3d.priors.toy), `samples.png`
(DDIM + CFG samples of held-out captions) and `sample_checks.json` (colour and shape accuracy of those samples).
"""

from __future__ import annotations

import json
from pathlib import Path

from distill3d.priors.toy_training import ToyTrainConfig
from stages.common import StageParams, work_dir

NAME = "train_prior"
INPUTS: tuple[str, ...] = ()


class Params(ToyTrainConfig, StageParams):
    """The `train_prior` section of params.yaml (see ToyTrainConfig for each field)."""

    sample_per_caption: int = 4
    sample_steps: int = 50
    sample_guidance_scale: float = 3.0


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    from distill3d.priors.toy_training import train_toy_prior

    cfg = ToyTrainConfig.model_validate(params.model_dump(include=set(ToyTrainConfig.model_fields)))
    stats = train_toy_prior(cfg, out, work_dir=work_dir(NAME, params, inputs))
    return {"training": {k: v for k, v in stats.items() if k != "loss_curve"}, **write_sample_checks(out, params)}


def write_sample_checks(prior_dir: Path, params: Params) -> dict:
    """Sample the held-out captions, save samples.png and sample_checks.json into ``prior_dir``."""
    from distill3d.priors.toy import ToyPrior
    from distill3d.priors.toy_checks import check_samples
    from distill3d.viz.grid import save_grid

    prior = ToyPrior.load(prior_dir)
    images, report = check_samples(prior, list(params.held_out), params.sample_per_caption, params.sample_steps,
                                   params.sample_guidance_scale, seed=params.seed)
    save_grid(images.permute(0, 2, 3, 1), prior_dir / "samples.png", ncols=params.sample_per_caption, scale=4,
              labels=[r["prompt"].split(",")[0] for r in report["samples"]])
    (prior_dir / "sample_checks.json").write_text(json.dumps(report, indent=2))
    return {"colour_accuracy": report["colour_accuracy"], "shape_accuracy": report["shape_accuracy"]}
