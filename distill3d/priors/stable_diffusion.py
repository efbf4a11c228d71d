"""Stable Diffusion 1.x / 2.x as a latent-space ``Prior``, loaded from a local folder in diffusers layout.

The folder is what ``StableDiffusionPipeline.save_pretrained`` writes (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``); every part is read with ``local_files_only=True`` so nothing contacts a hub.
A UNet with one input channel more than the latents is SD 2 depth's (``stable-diffusion-2-depth``): the prior is
then ``depth_conditioned`` and concatenates the views' depth to every UNet input, as diffusers'
``StableDiffusionDepth2ImgPipeline`` does with its estimated depth (its ``depth_estimator/`` is not needed: the
renderer knows the depth).
A folder whose ``model_index.json`` marks it as trained on the toy world (``distill3d.priors.toy_world``: the
project's own latent prior, ``models/toy_latent_prior``) loads the same way; the prior then reads prompts as the toy
world does (unknown words are errors, captions normalised to the training grammar, textureless prompt "a white
<shape>"). Its word-level tokenizer loads through ``AutoTokenizer`` like SD's CLIP tokenizer.
Ideas follow the diffusers pipelines (prompt encoding, VAE scaling) and threestudio's stable_diffusion_guidance
(frozen modules, fp16 UNet with fp32 guidance maths).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from distill3d.priors.base import Conditioning, Prior, PriorError, to_epsilon  # noqa: E402
from distill3d.priors.toy_world import (  # noqa: E402
    TOY_WORLD, folder_world, toy_captions, toy_prompt_error, toy_textureless_prompt,
)

SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def missing_sd_parts(path: Path) -> list[str]:
    """Names of the diffusers-layout subfolders ``path`` lacks (empty list: looks like a complete SD folder)."""
    return [name for name in SD_SUBFOLDERS if not (path / name).is_dir()]


def _weights_variant(folder: Path) -> str | None:
    """'fp16' when a folder holds only ``*.fp16.*`` weights (as some hub snapshots do), else None."""
    weights = [f.name for f in folder.iterdir() if f.suffix in (".safetensors", ".bin")]
    if weights and all(re.search(r"\.fp16[.-]", name) for name in weights):  # also sharded .fp16-00001-of-...
        return "fp16"
    return None


class StableDiffusionPrior(Prior):
    """SD 1.x / 2.x denoising 4-channel VAE latents (``space = "latent"``).

    Attributes beyond ``Prior``: ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler`` (a
    DDPMScheduler built from the folder's scheduler config, whatever class it names), ``prediction_type``,
    ``dtype`` (of the modules), ``latent_sample`` (encode with a posterior sample rather than its mean),
    ``world`` ("toy" for a folder trained on the toy world, else None).
    All modules are frozen (``requires_grad=False``) and in eval mode; gradients still flow through them to
    inputs (``encode_images`` is differentiable w.r.t. the images).
    """

    space = "latent"

    def __init__(
        self,
        path: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        latent_sample: bool = True,
    ) -> None:
        """Load from ``path``. dtype defaults to fp16 on CUDA and fp32 elsewhere (fp16 on CPU is refused)."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        self.path = Path(path)
        self.device = torch.device(device)
        if dtype is None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        if self.device.type == "cpu" and dtype != torch.float32:
            raise PriorError(f"dtype {dtype} on CPU is not supported: use dtype=torch.float32 (or run on CUDA)")
        self.dtype = dtype
        self.latent_sample = latent_sample
        missing = missing_sd_parts(self.path)
        if missing:
            raise PriorError(
                f"{self.path} is not a complete Stable Diffusion folder: missing {', '.join(m + '/' for m in missing)};"
                " expected diffusers layout unet/ vae/ text_encoder/ tokenizer/ scheduler/"
                " (e.g. from StableDiffusionPipeline.save_pretrained)"
            )

        def sub(name: str) -> str:
            return str(self.path / name)

        try:
            # The class named in tokenizer_config.json: CLIPTokenizer for SD, the toy world's word-level one.
            self.tokenizer = AutoTokenizer.from_pretrained(sub("tokenizer"), local_files_only=True)
            self.text_encoder = CLIPTextModel.from_pretrained(
                sub("text_encoder"), local_files_only=True, dtype=dtype,
                variant=_weights_variant(self.path / "text_encoder"),
            )
            self.vae = AutoencoderKL.from_pretrained(
                sub("vae"), local_files_only=True, torch_dtype=dtype, variant=_weights_variant(self.path / "vae")
            )
            self.unet = UNet2DConditionModel.from_pretrained(
                sub("unet"), local_files_only=True, torch_dtype=dtype, variant=_weights_variant(self.path / "unet")
            )
            self.scheduler = DDPMScheduler.from_pretrained(sub("scheduler"), local_files_only=True)
        except (OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise PriorError(f"cannot load Stable Diffusion from {self.path}: {first}") from err

        for module in (self.text_encoder, self.vae, self.unet):
            module.to(self.device).eval().requires_grad_(False)

        self.prediction_type: str = self.scheduler.config.prediction_type
        to_epsilon(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), torch.ones(1), self.prediction_type)  # validate
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(device=self.device, dtype=torch.float32)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_channels = int(self.vae.config.latent_channels)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.resolution = int(self.unet.config.sample_size) * self.vae_scale_factor
        self.max_length = int(self.tokenizer.model_max_length)
        extra = int(self.unet.config.in_channels) - self.latent_channels
        if extra not in (0, 1):
            raise PriorError(f"{self.path}: the UNet takes {self.unet.config.in_channels} input channels, the VAE "
                             f"gives {self.latent_channels}: expected equal (text-to-image) or one more (SD 2 depth)")
        self.depth_conditioned = extra == 1
        self.world = folder_world(self.path)

    # ------------------------------------------------------------------ prompts
    def prompt_error(self, prompt: str) -> str | None:
        return toy_prompt_error(prompt) if self.world == TOY_WORLD else None

    def textureless_prompt(self, prompt: str) -> str:
        return toy_textureless_prompt(prompt) if self.world == TOY_WORLD else prompt

    # ------------------------------------------------------------------ text
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """prompts -> (B, L, D) CLIP last hidden states, L = tokenizer max length (77 for SD), fp32."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if self.world == TOY_WORLD:  # the training grammar's captions; PriorError for unknown words
            prompts = toy_captions(list(prompts))
        tokens = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        with torch.no_grad():
            hidden = self.text_encoder(tokens.input_ids.to(self.device))[0]
        return hidden.float()

    # ------------------------------------------------------------------ images <-> latents
    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 4, R/8, R/8) scaled latents (fp32) with R = ``resolution``.

        Images are bilinearly resized to R, mapped to [-1, 1] and VAE-encoded (posterior sample, or its mean when
        ``latent_sample`` is False), times ``vae.config.scaling_factor``. Differentiable w.r.t. ``images``.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise PriorError(f"encode_images expects (B, 3, H, W) images, got shape {tuple(images.shape)}")
        x = images.to(self.device)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        x = (x * 2.0 - 1.0).to(self.dtype)
        posterior = self.vae.encode(x).latent_dist
        latents = posterior.sample(generator=generator) if self.latent_sample else posterior.mean
        return latents.float() * self.scaling_factor

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """(B, 4, h, w) scaled latents -> (B, 3, 8h, 8w) RGB in [0, 1] (fp32)."""
        z = (x0.to(self.device) / self.scaling_factor).to(self.dtype)
        image = self.vae.decode(z).sample.float()
        return ((image + 1.0) / 2.0).clamp(0.0, 1.0)

    # ------------------------------------------------------------------ denoiser
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                      cond: Conditioning | None = None) -> torch.Tensor:
        """epsilon-hat for (B, 4, h, w) x_t, (B,) integer t, (B, L, D) text -> (B, 4, h, w) in x_t's dtype.

        The UNet runs in ``self.dtype``; v / x_0 predictions are converted to epsilon in fp32 with
        ``alphas_cumprod`` (see ``to_epsilon``). A depth-conditioned model reads ``cond.depth`` / ``cond.mask``.
        """
        t = t.to(self.device).long().reshape(-1)
        if t.numel() == 1 and x_t.shape[0] > 1:
            t = t.expand(x_t.shape[0])
        x = x_t.to(self.device, self.dtype)
        if self.depth_conditioned:
            x = torch.cat([x, self.depth_channel(x.shape, cond).to(self.dtype)], dim=1)
        out = self.unet(x, t, encoder_hidden_states=text.to(self.device, self.dtype)).sample
        eps = to_epsilon(out.float(), x_t.to(self.device).float(), self.alphas_cumprod[t], self.prediction_type)
        return eps.to(x_t.dtype)

    def depth_channel(self, shape: torch.Size, cond: Conditioning | None) -> torch.Tensor:
        """The depth input of SD 2 depth for a (B, 4, h, w) batch: the views' inverse depth resized to h x w
        (bicubic) and scaled to [-1, 1] per view, as ``StableDiffusionDepth2ImgPipeline.prepare_depth_map``.

        ``cond.depth`` (B', H, W) is distance along the rays and ``cond.mask`` its coverage; B' divides B. Kept as
        relative inverse depth (near = large, background 0): what the monocular estimator that SD 2 depth was
        trained with (DPT) gives."""
        if cond is None or cond.depth is None:
            raise PriorError(f"{self.path} is a depth-conditioned model (SD 2 depth): it needs the views' depth, "
                             "so use it where depth is known (the pseudo_gt stage), or pass a text-to-image model")
        d = disparity(cond.depth, cond.mask).to(self.device)
        d = F.interpolate(d, size=tuple(shape[-2:]), mode="bicubic", align_corners=False)
        lo, hi = d.amin(dim=(1, 2, 3), keepdim=True), d.amax(dim=(1, 2, 3), keepdim=True)
        d = 2.0 * (d - lo) / (hi - lo).clamp_min(1e-8) - 1.0
        if shape[0] % d.shape[0]:
            raise PriorError(f"depth for {d.shape[0]} views cannot condition a batch of {shape[0]}")
        return d.repeat(shape[0] // d.shape[0], 1, 1, 1)

    def __repr__(self) -> str:
        return (
            f"StableDiffusionPrior(path={str(self.path)!r}, device={self.device}, dtype={self.dtype}, "
            f"resolution={self.resolution}, prediction_type={self.prediction_type!r}, "
            f"depth_conditioned={self.depth_conditioned}, world={self.world!r})"
        )


def disparity(depth: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, H, W) distance along the rays and coverage -> (B, 1, H, W) inverse depth, 0 where uncovered."""
    covered = depth > 0 if mask is None else mask > 0.5
    return torch.where(covered, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))[:, None].float()
