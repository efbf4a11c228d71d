"""The toy-world prior: a small text-conditioned pixel-space diffusion model built from diffusers classes.

Folder layout (the same sub-folders as a Stable Diffusion checkpoint, minus the VAE)::

    prior.json          {"kind": "toy", "resolution": 32, ...}
    unet/               diffusers UNet2DConditionModel (EMA weights)
    text_encoder/       transformers CLIPTextModel
    tokenizer/          word-level PreTrainedTokenizerFast over the toy vocabulary
    scheduler/          diffusers DDPMScheduler config (v-prediction, cosine schedule)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from pydantic import BaseModel, ConfigDict
from transformers import CLIPTextModel, PreTrainedTokenizerFast

from distill3d.priors.base import Conditioning, Prior, to_epsilon
from distill3d.priors.text import build_text_encoder, build_tokenizer
from distill3d.priors.toy_world import (  # noqa: F401  (canonical_caption: re-exported, it used to live here)
    canonical_caption, toy_captions, toy_prompt_error, toy_textureless_prompt,
)


class ToyPriorArchitecture(BaseModel):
    """Sizes of the toy prior's networks."""

    model_config = ConfigDict(extra="forbid")

    resolution: int = 32
    block_out_channels: tuple[int, ...] = (32, 48, 64)
    cross_attention_levels: tuple[bool, ...] = (False, False, True)  # cross-attention only where it is cheap
    # Self-attention only (diffusers AttnDownBlock2D / AttnUpBlock2D: no cross-attention, no feed-forward) at
    # levels without cross-attention: global context at a resolution where full transformer blocks are too slow.
    self_attention_levels: tuple[bool, ...] = (False, False, False)
    layers_per_block: int | tuple[int, ...] = 1
    text_width: int = 64
    text_layers: int = 2
    max_length: int = 16
    prediction_type: str = "v_prediction"
    beta_schedule: str = "squaredcos_cap_v2"


def block_types(cross: tuple[bool, ...], self_attention: tuple[bool, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """diffusers (down_block_types, up_block_types) for per-level cross-attention / self-attention flags."""
    selfs = tuple(self_attention) + (False,) * (len(cross) - len(self_attention))
    kinds = ["CrossAttn" if c else ("Attn" if a else "") for c, a in zip(cross, selfs)]
    return tuple(f"{k}DownBlock2D" for k in kinds), tuple(f"{k}UpBlock2D" for k in reversed(kinds))


def build_unet(arch: ToyPriorArchitecture, channels: int = 3, sample_size: int | None = None) -> UNet2DConditionModel:
    """The toy UNet over ``channels``-channel inputs (3: pixels; a VAE's latent channels for the latent prior) of
    ``sample_size`` (default ``arch.resolution``) pixels."""
    down, up = block_types(arch.cross_attention_levels, arch.self_attention_levels)
    return UNet2DConditionModel(
        sample_size=sample_size or arch.resolution, in_channels=channels, out_channels=channels,
        layers_per_block=arch.layers_per_block,
        block_out_channels=arch.block_out_channels, down_block_types=down, up_block_types=up,
        cross_attention_dim=arch.text_width, attention_head_dim=8, norm_num_groups=16,
        # Pooled text embedding added to the time embedding: global colour/shape conditioning at every level.
        addition_embed_type="text", addition_embed_type_num_heads=4,
    )


def build_scheduler(arch: ToyPriorArchitecture) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=arch.beta_schedule, prediction_type=arch.prediction_type,
        clip_sample=False,
    )


class ToyPrior(Prior):
    """Pixel-space prior over 32x32 (or ``resolution``) toy-world images."""

    space = "pixel"

    def __init__(
        self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: PreTrainedTokenizerFast,
        scheduler: DDPMScheduler, arch: ToyPriorArchitecture, device: torch.device | str = "cpu",
        info: dict | None = None,
    ):
        self.device = torch.device(device)
        self.unet = unet.to(self.device)
        self.text_encoder = text_encoder.to(self.device)
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.arch = arch
        self.info = info or {}
        self.resolution = arch.resolution
        self.num_train_timesteps = scheduler.config.num_train_timesteps
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)

    # -- construction and persistence -------------------------------------------------------------------------
    @classmethod
    def build(cls, arch: ToyPriorArchitecture, device: torch.device | str = "cpu") -> "ToyPrior":
        tok = build_tokenizer(arch.max_length)
        return cls(build_unet(arch), build_text_encoder(tok, arch.text_width, arch.text_layers), tok,
                   build_scheduler(arch), arch, device)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "ToyPrior":
        path = Path(path)
        info = json.loads((path / "prior.json").read_text())
        arch = ToyPriorArchitecture.model_validate({k: v for k, v in info["architecture"].items() if k != "extra"})
        prior = cls(
            UNet2DConditionModel.from_pretrained(path / "unet", local_files_only=True),
            CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True),
            PreTrainedTokenizerFast.from_pretrained(path / "tokenizer", local_files_only=True),
            DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True),
            arch, device, info,
        )
        prior.eval()
        return prior

    def save(self, path: str | Path, info: dict | None = None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(path / "unet")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        self.scheduler.save_pretrained(path / "scheduler")
        meta = {"kind": "toy", "space": "pixel", "resolution": self.resolution, "architecture": self.arch.model_dump(mode="json"),
                **(info or {})}
        (path / "prior.json").write_text(json.dumps(meta, indent=2))

    def eval(self) -> "ToyPrior":
        for m in (self.unet, self.text_encoder):
            m.eval()
            m.requires_grad_(False)
        return self

    # -- Prior interface ---------------------------------------------------------------------------------------
    def prompt_error(self, prompt: str) -> str | None:
        return toy_prompt_error(prompt)

    def textureless_prompt(self, prompt: str) -> str:
        """"a white <shape>": see ``distill3d.priors.toy_world.toy_textureless_prompt``."""
        return toy_textureless_prompt(prompt)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(toy_captions(prompts), padding="max_length", max_length=self.arch.max_length,
                             truncation=True, return_tensors="pt")["input_ids"]
        return ids.to(self.device)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        return self.text_encoder(self.tokenize(prompts)).last_hidden_state

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            images = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear",
                                   align_corners=False, antialias=images.shape[-1] > self.resolution)
        return images * 2.0 - 1.0

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return ((x0 + 1.0) / 2.0).clamp(0.0, 1.0)

    def model_output(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The UNet's raw prediction (v, epsilon or x_0, per the scheduler's prediction_type)."""
        return self.unet(x_t, t, encoder_hidden_states=text).sample

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                      cond: Conditioning | None = None) -> torch.Tensor:
        return to_epsilon(self.model_output(x_t, t, text), x_t, self.alphas_cumprod[t],
                          self.scheduler.config.prediction_type)
