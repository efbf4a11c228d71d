"""Stage `train_prior`: train the toy-world pixel prior (32x32) into `models/toy_prior` (weights committed to git;
DVC `cache: false`).

See distill3d.priors.toy_training for the recipe (random solid backgrounds, balanced captions, DreamFusion's view
phrases) and stages/check_prior.py for what its samples are checked on. Resumable: checkpoints and the rendered view
bank live in the stage's work dir until the output is complete.
"""

from __future__ import annotations

from pathlib import Path

from distill3d.priors.toy_training import ToyTrainConfig
from stages.core.protocol import StageParams
from stages.core.store import work_dir

NAME = "train_prior"
INPUTS: tuple[str, ...] = ()


class Params(ToyTrainConfig, StageParams):
    """The `train_prior` section of params.yaml (see ToyTrainConfig for each field)."""


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    from distill3d.priors.toy_training import train_toy_prior

    cfg = ToyTrainConfig.model_validate(params.model_dump())
    stats = train_toy_prior(cfg, out, work_dir=work_dir(NAME, params, inputs))
    return {k: v for k, v in stats.items() if k != "loss_curve"}
