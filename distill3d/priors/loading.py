"""``load_prior(path)``: pick the prior backend from what a local folder holds. Never downloads anything.

* ``prior.json`` with ``"kind": "toy"`` -> ``distill3d.priors.toy.ToyPrior`` (``models/toy_prior`` from
  ``dvc repro train_prior``);
* ``prior.json`` with ``"kind": "toy_multiview"`` -> ``distill3d.priors.multiview.MultiViewToyPrior`` (MVDream on the
  toy world, ``models/toy_mv_prior`` from the ``train_mv_prior`` stage);
* ``prior.json`` with ``"kind": "mvdream"`` -> ``distill3d.priors.mvdream.MVDreamPrior`` (the released MVDream weights,
  converted by ``distill3d.priors.mvdream.convert_mvdream_checkpoint``);
* ``model_index.json`` naming an IF pipeline -> ``distill3d.priors.deepfloyd_if.IFPrior`` (DeepFloyd IF stage I,
  e.g. ``DeepFloyd/IF-I-XL-v1.0``: a 64 x 64 pixel prior);
* ``unet/`` and ``vae/`` subfolders -> ``StableDiffusionPrior`` (a diffusers-layout SD 1.x / 2.x folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from distill3d.priors.base import Prior, PriorError

# Hub clients read these when imported; local_files_only=True below is the guarantee either way.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TOY_HINT = "for the toy prior, models/toy_prior is produced by `dvc repro train_prior`"
SD_HINT = (
    "for Stable Diffusion, put a diffusers-layout folder with unet/ vae/ text_encoder/ tokenizer/ scheduler/ there"
    " (e.g. written by StableDiffusionPipeline.save_pretrained)"
)


def _listing(path: Path, limit: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if not names:
        return "nothing (empty folder)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_prior(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> Prior:
    """Load the prior stored at ``path`` onto ``device``.

    ``dtype`` applies to Stable Diffusion (default fp16 on CUDA, fp32 on CPU); the toy prior picks its own.
    Raises PriorError with a one-line fix when the folder is missing or holds neither layout.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise PriorError(f"prior folder {path} does not exist: {TOY_HINT}; {SD_HINT}")
    if not path.is_dir():
        raise PriorError(f"prior path {path} is a file, expected a folder: {TOY_HINT}; {SD_HINT}")

    manifest = path / "prior.json"
    if manifest.is_file():
        try:
            kind = json.loads(manifest.read_text()).get("kind")
        except (json.JSONDecodeError, AttributeError) as err:
            raise PriorError(f"{manifest} is not a JSON object with a 'kind' field ({err}); {TOY_HINT}") from err
        if kind == "toy":
            from distill3d.priors.toy import ToyPrior

            return ToyPrior.load(path, device)
        if kind == "toy_multiview":
            from distill3d.priors.multiview import MultiViewToyPrior

            return MultiViewToyPrior.load(path, device)
        if kind == "mvdream":
            from distill3d.priors.mvdream import MVDreamPrior

            return MVDreamPrior(path, device=device, dtype=dtype)
        raise PriorError(f"{manifest} names kind {kind!r}; the kinds with a prior.json are 'toy', 'toy_multiview' and"
                         f" 'mvdream' ({TOY_HINT})")

    from distill3d.priors.deepfloyd_if import IFPrior, is_if_folder

    if is_if_folder(path):
        return IFPrior(path, device=device, dtype=dtype)

    if (path / "unet").is_dir() and (path / "vae").is_dir():
        from distill3d.priors.stable_diffusion import StableDiffusionPrior

        return StableDiffusionPrior(path, device=device, dtype=dtype)

    raise PriorError(
        f"{path} holds {_listing(path)}; expected either prior.json (the toy prior, models/toy_prior from"
        f" `dvc repro train_prior`)"
        f" or a diffusers-layout Stable Diffusion folder with unet/ vae/ text_encoder/ tokenizer/ scheduler/"
        f" (e.g. from StableDiffusionPipeline.save_pretrained)"
        f" or a DeepFloyd IF stage I folder (model_index.json naming IFPipeline, e.g. DeepFloyd/IF-I-XL-v1.0)"
    )
