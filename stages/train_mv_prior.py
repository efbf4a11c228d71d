"""Stage `train_mv_prior`: train the multi-view toy prior (MVDream on the toy world) into `models/toy_mv_prior`.

See distill3d.priors.multiview_training for the recipe and stages/check_mv_prior.py for what its samples are checked
on.
"""

from __future__ import annotations

from pathlib import Path

from distill3d.priors.multiview_training import MultiViewTrainConfig
from stages.core.protocol import StageParams
from stages.core.store import work_dir

NAME = "train_mv_prior"
INPUTS: tuple[str, ...] = ()


class Params(MultiViewTrainConfig, StageParams):
    """The `train_mv_prior` section of params.yaml (see MultiViewTrainConfig for each field)."""


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    from distill3d.priors.multiview_training import train_multiview_prior

    cfg = MultiViewTrainConfig.model_validate(params.model_dump())
    stats = train_multiview_prior(cfg, out, work_dir=work_dir(NAME, params, inputs))
    return {k: v for k, v in stats.items() if k != "loss_curve"}
