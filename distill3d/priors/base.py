"""The prior interface every method uses (SDS, VSD, multi-view SDS, img2img pseudo ground truth).

A prior composes a denoiser (a diffusers UNet), a diffusers noise scheduler and a text encoder. Score-distillation
maths lives in ``distill3d.guidance``, never here: a prior only encodes prompts and images and predicts noise.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch


class PriorError(ValueError):
    """A prior cannot serve a request (unknown prompt word, missing weights, ...). Message says how to fix it."""


@dataclass
class TextEmbeddings:
    """Encoded prompts: ``cond`` (B, L, D) per prompt, ``uncond`` (1, L, D) for the empty prompt."""

    cond: torch.Tensor
    uncond: torch.Tensor


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
    # channel), set for a block of calls by ``depth_condition``.
    depth_conditioned: bool = False
    _disparity: torch.Tensor | None = None

    @contextmanager
    def depth_condition(self, depth: torch.Tensor, mask: torch.Tensor) -> Iterator[None]:
        """Within the block a depth-conditioned prior's denoiser sees these views' geometry; a no-op for others.

        depth (B, H, W): distance along each pixel's ray; mask (B, H, W): coverage. Kept as relative inverse
        depth (near = large, background 0): what the monocular estimator that SD 2 depth was trained with (DPT)
        gives. The B views are the batch of every ``predict_noise`` call in the block (or a divisor of it, e.g.
        the 2B of classifier-free guidance)."""
        if not self.depth_conditioned:
            yield
            return
        disparity = torch.where(mask > 0.5, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))
        self._disparity = disparity[:, None].to(self.device, torch.float32)
        try:
            yield
        finally:
            self._disparity = None

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
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """epsilon-hat(x_t; y, t) for (B, C, h, w) x_t, (B,) integer t, (B, L, D) text. Always returns epsilon,
        converting from the model's own parameterisation (v or x_0) where needed. Not differentiable to inputs
        in score distillation use: callers wrap it in ``torch.no_grad()``."""

    def predict_noise_cfg(
        self, x_t: torch.Tensor, t: torch.Tensor, text: TextEmbeddings, guidance_scale: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Classifier-free guidance (Ho & Salimans 2022; DreamFusion eq. 1):
        eps_guided = eps_uncond + w (eps_cond - eps_uncond). One batched UNet call of size 2B.

        Returns (eps_guided, eps_cond, eps_uncond).
        """
        b = x_t.shape[0]
        uncond = text.uncond.expand(b, -1, -1)
        eps = self.predict_noise(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text.cond, uncond]))
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
