"""The prior interface every method uses (SDS, VSD, multi-view SDS, img2img pseudo ground truth).

A prior composes a denoiser (a diffusers UNet), a diffusers noise scheduler and a text encoder. Score-distillation
maths lives in ``distill3d.guidance``, never here: a prior only encodes prompts and images and predicts noise.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Literal

import torch

from distill3d.cameras import Cameras


class PriorError(ValueError):
    """A prior cannot serve a request (unknown prompt word, missing weights, ...). Message says how to fix it."""


@dataclass
class TextEmbeddings:
    """Encoded prompts: ``cond`` (B, L, D) per prompt, ``uncond`` (1, L, D) for the empty prompt."""

    cond: torch.Tensor
    uncond: torch.Tensor


@dataclass
class Conditioning:
    """Explicit extra conditioning of a denoiser call, one entry per image of the batch (never hidden state).

    cameras: the views' cameras (B): a multi-view prior (MVDream) and a camera-conditioned LoRA (VSD) read them.
    depth (B, H, W): distance along each pixel's ray, with ``mask`` (B, H, W) its coverage: a depth-conditioned
    prior (Stable Diffusion 2 depth) reads them. Priors ignore what they do not use.
    """

    cameras: Cameras | None = None
    depth: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def repeat(self, n: int) -> "Conditioning":
        """The conditioning of a batch made of ``n`` copies of this one (e.g. the 2B of classifier-free guidance)."""
        if n == 1:
            return self
        cams = None
        if self.cameras is not None:
            idx = list(range(len(self.cameras))) * n
            cams = self.cameras[idx]
        rep = lambda x: None if x is None else x.repeat(n, *([1] * (x.dim() - 1)))  # noqa: E731
        return replace(self, cameras=cams, depth=rep(self.depth), mask=rep(self.mask))


def repeat_conditioning(cond: Conditioning | None, n: int) -> Conditioning | None:
    return None if cond is None else cond.repeat(n)


class Prior(abc.ABC):
    """A text-conditioned diffusion model seen through the operations score distillation needs.

    Attributes:
        space: "pixel" (the model denoises images) or "latent" (it denoises VAE latents).
        resolution: native image size in pixels that renders are resized to before encoding.
        num_train_timesteps: T of the noise schedule.
        alphas_cumprod: (T,) tensor, alpha-bar_t of the forward process x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps.
    """

    space: Literal["pixel", "latent"]
    resolution: int
    num_train_timesteps: int
    alphas_cumprod: torch.Tensor
    device: torch.device
    # A depth-conditioned prior's denoiser also reads the views' depth (Stable Diffusion 2 depth: a 5th UNet input
    # channel), given as ``Conditioning.depth``; a multi-view prior reads ``Conditioning.cameras``.
    depth_conditioned: bool = False
    camera_conditioned: bool = False
    # Consecutive groups of this many images form one multi-view sample (MVDream: 4); 1 for single-view priors.
    views_per_sample: int = 1

    @abc.abstractmethod
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """prompts -> (B, L, D) embeddings. Raises PriorError for prompts the model cannot read."""

    def embed(self, prompts: list[str]) -> TextEmbeddings:
        """Embeddings for ``prompts`` and for the empty prompt (for classifier-free guidance)."""
        return TextEmbeddings(cond=self.encode_text(prompts), uncond=self.encode_text([""]))

    def textureless_prompt(self, prompt: str) -> str:
        """The prompt that describes ``prompt``'s object rendered textureless (white albedo, shaded; DreamFusion
        3.1). A general prior reads the prompt itself, as in the paper. A prior whose world has a word for a
        white, untextured object overrides this (the toy prior: "a green cone" -> "a white cone"), so a
        textureless render is not scored against a colour it cannot show."""
        return prompt

    @abc.abstractmethod
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> x_0 in model space (B, C, h, w); differentiable w.r.t. images."""

    @abc.abstractmethod
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """x_0 in model space -> (B, 3, H, W) RGB in [0, 1]."""

    @abc.abstractmethod
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                      cond: Conditioning | None = None) -> torch.Tensor:
        """epsilon-hat(x_t; y, t, c) for (B, C, h, w) x_t, (B,) integer t, (B, L, D) text and the optional explicit
        conditioning ``cond`` (cameras, depth) of the B images. Always returns epsilon, converting from the model's
        own parameterisation (v or x_0) where needed. Not differentiable to inputs in score distillation use:
        callers wrap it in ``torch.no_grad()``."""

    def predict_noise_cfg(
        self, x_t: torch.Tensor, t: torch.Tensor, text: TextEmbeddings, guidance_scale: float,
        cond: Conditioning | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Classifier-free guidance (Ho & Salimans 2022; DreamFusion eq. 1):
        eps_guided = eps_uncond + w (eps_cond - eps_uncond). One batched UNet call of size 2B; ``cond`` applies
        to both halves.

        Returns (eps_guided, eps_cond, eps_uncond).
        """
        b = x_t.shape[0]
        uncond = text.uncond.expand(b, -1, -1)
        eps = self.predict_noise(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text.cond, uncond]),
                                 repeat_conditioning(cond, 2))
        eps_cond, eps_uncond = eps.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond), eps_cond, eps_uncond

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x_0) (DDPM eq. 4)."""
        a = self.alphas_cumprod.to(x0.device)[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def prompt_error(self, prompt: str) -> str | None:
        """None if the prior can read ``prompt``, else a one-line reason with the fix."""
        return None


def to_epsilon(
    model_output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """Convert a denoiser output to epsilon for x_t = sqrt(a) x_0 + sqrt(1 - a) eps.

    model_output, x_t: (B, C, h, w); alpha_bar: (B,) alpha-bar_t. With v = sqrt(a) eps - sqrt(1 - a) x_0
    (Salimans & Ho 2022): eps = sqrt(a) v + sqrt(1 - a) x_t. With x_0 prediction: eps = (x_t - sqrt(a) x_0) / sqrt(1 - a).
    """
    a = alpha_bar.to(device=x_t.device, dtype=x_t.dtype).view(-1, 1, 1, 1)
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return a.sqrt() * model_output + (1 - a).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - a.sqrt() * model_output) / (1 - a).sqrt().clamp_min(1e-8)
    raise PriorError(f"unknown scheduler prediction_type {prediction_type!r}: expected epsilon, v_prediction or sample")
