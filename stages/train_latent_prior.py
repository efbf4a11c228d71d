"""Stage `train_latent_prior`: train the toy-world latent prior (64x64 images, 16x16x4 latents) into
`models/toy_latent_prior`, a Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/) that `--prior` accepts like any SD folder.

See distill3d.priors.latent_training for the recipe (AutoencoderKL, then a UNet on its scaled latents) and
stages/check_prior.py (params section `check_latent_prior`) for what its samples are checked on. Resumable: the view
bank, the VAE, the encoded latents and the UNet checkpoints live in the stage's work dir until the output is complete.
"""

from __future__ import annotations

from pathlib import Path

from distill3d.priors.latent_training import LatentTrainConfig
from stages.core.protocol import StageParams
from stages.core.store import work_dir

NAME = "train_latent_prior"
INPUTS: tuple[str, ...] = ()


class Params(LatentTrainConfig, StageParams):
    """The `train_latent_prior` section of params.yaml (see LatentTrainConfig for each field)."""


def _no_curves(stats: dict) -> dict:
    return {k: _no_curves(v) if isinstance(v, dict) else v for k, v in stats.items() if k != "loss_curve"}


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    from distill3d.priors.latent_training import train_latent_prior

    cfg = LatentTrainConfig.model_validate(params.model_dump())
    return _no_curves(train_latent_prior(cfg, out, work_dir=work_dir(NAME, params, inputs)))
