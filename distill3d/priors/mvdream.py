"""The released MVDream weights (Shi et al. 2023) as a distill3d ``Prior``: checkpoint conversion and loading.

The released checkpoint (``sd-v2.1-base-4view.pt``: a plain torch state dict in LDM layout; the SD 1.5 variant
``sd-v1.5-4view.pt`` likewise) holds MVDream's ``MultiViewUNetModel`` under ``model.diffusion_model.*`` -- an SD 2.1-base
UNet plus the camera MLP ``camera_embed.0`` (Linear(16, 1280)) / ``camera_embed.2`` (Linear(1280, 1280)) -- and copies
of the VAE and the OpenCLIP text encoder. Conversion (``convert_mvdream_unet``):

* the SD part goes through diffusers' own LDM -> diffusers helpers of ``diffusers.loaders.single_file_utils``
  (diffusers 0.42.1): ``create_unet_diffusers_config_from_ldm`` builds the UNet config from MVDream's yaml
  parameters (``MVDREAM_UNET_PARAMS``, read from MVDream's ``configs/sd-v2-base.yaml`` / ``sd-v1.yaml``) and
  ``convert_ldm_unet_checkpoint`` renames the weights; MVDream's ``SpatialTransformer3D`` has exactly the parameters
  of LDM's ``SpatialTransformer`` (its 3D self-attention adds no weights), so those helpers apply unchanged;
* the camera MLP maps to diffusers' projection class embedding (``class_embed_type="projection"``,
  ``projection_class_embeddings_input_dim=16``): ``camera_embed.0`` -> ``class_embedding.linear_1``,
  ``camera_embed.2`` -> ``class_embedding.linear_2``; MVDream adds it to the time embedding, as diffusers does with
  ``class_labels``;
* the 3D self-attention is ``distill3d.priors.multiview.MultiViewAttnProcessor`` on every ``attn1``.

The VAE, text encoder, tokenizer and scheduler come from a local Stable Diffusion 2.1-base folder in diffusers layout
(MVDream fine-tuned only the UNet: same VAE, OpenCLIP-H penultimate layer = SD 2's diffusers ``text_encoder``, same
scaled-linear epsilon schedule 0.00085-0.012). ``convert_mvdream_checkpoint`` writes a prior folder::

    prior.json      {"kind": "mvdream", "views_per_sample": 4, "model": ..., "checkpoint": ..., "sd_folder": ...}
    unet/           the converted multi-view UNet (diffusers save_pretrained, class_embed_type "projection")
    vae/ text_encoder/ tokenizer/ scheduler/    links to (or copies of) the SD 2.1-base folder's

which ``distill3d.priors.loading.load_prior`` opens as an ``MVDreamPrior``: 256 x 256 images (32 x 32 latents), 4 views
per sample, cameras read from ``Conditioning.cameras`` in distill3d's convention and converted by
``distill3d.priors.multiview.mvdream_camera`` (see its docstring: MVDream's ``get_camera`` azimuth / elevation are
distill3d's; its world is distill3d's with x' = x, y' = -z, z' = y; threestudio's azimuth is MVDream's minus 90).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from distill3d.priors.base import Conditioning, PriorError, to_epsilon
from distill3d.priors.multiview import CAMERA_DIM, multiview_camera_labels, set_multiview_attention
from distill3d.priors.stable_diffusion import StableDiffusionPrior

LDM_PREFIX = "model.diffusion_model."
KIND = "mvdream"
VIEWS = 4

# MultiViewUNetModel parameters of MVDream's configs (mvdream/configs/sd-v2-base.yaml, sd-v1.yaml).
MVDREAM_UNET_PARAMS: dict[str, dict] = {
    "sd-v2.1-base-4view": dict(
        in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1], num_res_blocks=2,
        channel_mult=[1, 2, 4, 4], num_head_channels=64, use_spatial_transformer=True, use_linear_in_transformer=True,
        transformer_depth=1, context_dim=1024, legacy=False, camera_dim=16,
    ),
    "sd-v1.5-4view": dict(
        in_channels=4, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1], num_res_blocks=2,
        channel_mult=[1, 2, 4, 4], num_heads=8, use_spatial_transformer=True, transformer_depth=1, context_dim=768,
        legacy=False, camera_dim=16,
    ),
}
CAMERA_KEYS = {  # diffusers name -> LDM name (under LDM_PREFIX)
    "class_embedding.linear_1.weight": "camera_embed.0.weight",
    "class_embedding.linear_1.bias": "camera_embed.0.bias",
    "class_embedding.linear_2.weight": "camera_embed.2.weight",
    "class_embedding.linear_2.bias": "camera_embed.2.bias",
}
SD_PARTS = ("vae", "text_encoder", "tokenizer", "scheduler")


def mvdream_unet_config(unet_params: dict, image_size: int = 256, vae_ch_mult: tuple[int, ...] = (1, 2, 4, 4)) -> dict:
    """diffusers ``UNet2DConditionModel`` config for a MultiViewUNetModel with yaml ``unet_params`` (e.g.
    ``MVDREAM_UNET_PARAMS["sd-v2.1-base-4view"]``), generating ``image_size`` pixels through a VAE with
    ``vae_ch_mult`` levels (latents of image_size / 2^(levels - 1)).

    diffusers' ``create_unet_diffusers_config_from_ldm`` does the SD part; added here: the up-block types (it relies
    on SD's 4-level default), ``out_channels`` and the camera MLP (``class_embed_type="projection"`` over
    ``camera_dim`` inputs).
    """
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm

    original = {"model": {"params": {
        "unet_config": {"params": dict(unet_params)},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": list(vae_ch_mult)}}},
    }}}
    with warnings.catch_warnings():  # its image_size argument is flagged deprecated; the value is still used
        warnings.simplefilter("ignore", FutureWarning)
        config = create_unet_diffusers_config_from_ldm(original, {}, image_size=image_size)
    config["up_block_types"] = [b.replace("Down", "Up") for b in reversed(config["down_block_types"])]
    config["out_channels"] = unet_params.get("out_channels", unet_params["in_channels"])
    config["class_embed_type"] = "projection"
    config["projection_class_embeddings_input_dim"] = unet_params.get("camera_dim", CAMERA_DIM)
    return config


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint file (.pt / .ckpt / .pth torch state dict, optionally under "state_dict", or .safetensors) ->
    its state dict. Loaded with ``weights_only=True``: tensors only, no code."""
    path = Path(path)
    if not path.is_file():
        raise PriorError(f"MVDream checkpoint {path} does not exist (e.g. sd-v2.1-base-4view.pt from MVDream's release)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def convert_mvdream_unet(checkpoint: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """LDM-layout MVDream state dict (keys ``model.diffusion_model.*``, other keys ignored) -> diffusers UNet state
    dict for ``config`` (``mvdream_unet_config``). The SD part is renamed by diffusers' ``convert_ldm_unet_checkpoint``,
    the camera MLP by ``CAMERA_KEYS``. Tensors are not copied or changed."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    missing = [LDM_PREFIX + k for k in CAMERA_KEYS.values() if LDM_PREFIX + k not in checkpoint]
    if not any(k.startswith(LDM_PREFIX) for k in checkpoint):
        raise PriorError(f"not an LDM checkpoint: no {LDM_PREFIX}* keys (expected MVDream's sd-v2.1-base-4view.pt)")
    if missing:
        raise PriorError(f"not an MVDream checkpoint: no camera MLP ({', '.join(missing)})")
    plain = {k: v for k, v in checkpoint.items() if not k.startswith(LDM_PREFIX + "camera_embed.")}
    state = convert_ldm_unet_checkpoint(plain, {k: v for k, v in config.items() if k != "class_embed_type"})
    state.update({new: checkpoint[LDM_PREFIX + old] for new, old in CAMERA_KEYS.items()})
    return state


def build_mvdream_unet(checkpoint: dict[str, torch.Tensor], unet_params: dict | None = None, image_size: int = 256,
                       vae_ch_mult: tuple[int, ...] = (1, 2, 4, 4), views: int = VIEWS):
    """The multi-view diffusers UNet holding ``checkpoint``'s weights exactly, with ``MultiViewAttnProcessor`` on its
    self-attention. PriorError when the checkpoint and the architecture disagree (names it the keys)."""
    from diffusers import UNet2DConditionModel

    config = mvdream_unet_config(unet_params or MVDREAM_UNET_PARAMS["sd-v2.1-base-4view"], image_size, vae_ch_mult)
    state = convert_mvdream_unet(checkpoint, config)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    try:
        result = unet.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # size mismatches
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err))
        raise PriorError(f"MVDream checkpoint does not fit the UNet ({first}): wrong model name / unet_params?") from err
    if result.missing_keys or result.unexpected_keys:
        raise PriorError(f"MVDream checkpoint does not fit the UNet: missing {result.missing_keys[:4]}, "
                         f"unexpected {result.unexpected_keys[:4]} (wrong model name / unet_params?)")
    set_multiview_attention(unet, views)
    return unet.eval()


def convert_mvdream_checkpoint(
    checkpoint: str | Path, sd_folder: str | Path, out: str | Path, model: str = "sd-v2.1-base-4view",
    link: bool = True, unet_params: dict | None = None, image_size: int = 256,
) -> Path:
    """Write an MVDream prior folder at ``out`` (atomically): the checkpoint's UNet converted to diffusers
    (``unet/``), the VAE / text encoder / tokenizer / scheduler of the local SD 2.1-base folder ``sd_folder`` (symbolic
    links with ``link``, else copies) and ``prior.json``. ``model`` picks MVDream's yaml parameters
    (``MVDREAM_UNET_PARAMS``) unless ``unet_params`` are given. Returns ``out``."""
    sd_folder, out = Path(sd_folder).expanduser().resolve(), Path(out)
    lacking = [p for p in SD_PARTS if not (sd_folder / p).is_dir()]
    if lacking:
        raise PriorError(f"{sd_folder} lacks {', '.join(p + '/' for p in lacking)}: give a diffusers-layout Stable "
                         "Diffusion 2.1-base folder (StableDiffusionPipeline.save_pretrained)")
    if unet_params is None and model not in MVDREAM_UNET_PARAMS:
        raise PriorError(f"unknown MVDream model {model!r}: one of {', '.join(MVDREAM_UNET_PARAMS)}")
    params = unet_params or MVDREAM_UNET_PARAMS[model]
    vae_config = json.loads((sd_folder / "vae" / "config.json").read_text())
    vae_ch_mult = tuple(c // vae_config["block_out_channels"][0] for c in vae_config["block_out_channels"])
    unet = build_mvdream_unet(read_checkpoint(checkpoint), params, image_size, vae_ch_mult)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        unet.save_pretrained(tmp / "unet")
        for part in SD_PARTS:
            if link:
                os.symlink(sd_folder / part, tmp / part, target_is_directory=True)
            else:
                shutil.copytree(sd_folder / part, tmp / part)
        (tmp / "prior.json").write_text(json.dumps({
            "kind": KIND, "space": "latent", "views_per_sample": VIEWS, "model": model,
            "checkpoint": Path(checkpoint).name, "sd_folder": str(sd_folder), "unet_params": params,
        }, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class MVDreamPrior(StableDiffusionPrior):
    """MVDream's multi-view latent diffusion model from a folder written by ``convert_mvdream_checkpoint``.

    A ``StableDiffusionPrior`` (VAE latents, CLIP text, epsilon schedule) whose UNet denoises groups of 4 views:
    ``predict_noise(x_t, t, text, cond)`` needs ``cond.cameras`` for the B = 4k latents x_t (B, 4, 32, 32), consecutive
    groups of 4 the views of one sample; they reach the UNet as ``class_labels = mvdream_camera(cameras)``.
    """

    camera_conditioned = True

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 latent_sample: bool = True) -> None:
        super().__init__(path, device=device, dtype=dtype, latent_sample=latent_sample)
        info = json.loads((self.path / "prior.json").read_text())
        self.views_per_sample = int(info.get("views_per_sample", VIEWS))
        if self.unet.config.class_embed_type != "projection" or \
                self.unet.config.projection_class_embeddings_input_dim != CAMERA_DIM:
            raise PriorError(f"{self.path}/unet has no camera MLP (class_embed_type 'projection' over {CAMERA_DIM} "
                             "inputs): convert the MVDream checkpoint with convert_mvdream_checkpoint")
        set_multiview_attention(self.unet, self.views_per_sample)

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                      cond: Conditioning | None = None) -> torch.Tensor:
        """epsilon-hat for x_t (B, 4, h, w), t (B,), text (B, L, D), cameras ``cond.cameras`` (B) -> (B, 4, h, w)."""
        labels = multiview_camera_labels(x_t.shape[0], cond, self.views_per_sample)
        t = t.to(self.device).long().reshape(-1)
        if t.numel() == 1 and x_t.shape[0] > 1:
            t = t.expand(x_t.shape[0])
        out = self.unet(x_t.to(self.device, self.dtype), t, encoder_hidden_states=text.to(self.device, self.dtype),
                        class_labels=labels.to(self.device, self.dtype)).sample
        eps = to_epsilon(out.float(), x_t.to(self.device).float(), self.alphas_cumprod[t], self.prediction_type)
        return eps.to(x_t.dtype)

    def __repr__(self) -> str:
        return f"MVDreamPrior(path={str(self.path)!r}, device={self.device}, dtype={self.dtype}, views=4)"
