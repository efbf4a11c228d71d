"""Ancestral sampling from any ``Prior`` with classifier-free guidance (DDIM, Song et al. 2021)."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from distill3d.priors.base import Prior


@torch.no_grad()
def sample_images(
    prior: Prior, prompts: list[str], steps: int = 50, guidance_scale: float = 3.0,
    generator: torch.Generator | None = None, shape: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """DDIM samples for ``prompts`` -> (B, 3, H, W) in [0, 1]. ``shape`` is (C, h, w) in model space
    (default: 3 x resolution^2, right for pixel priors)."""
    # The prior always hands back epsilon, so the sampler is configured for epsilon whatever the model predicts.
    sched = DDIMScheduler.from_config(prior.scheduler.config, prediction_type="epsilon", clip_sample=False,
                                      set_alpha_to_one=True)
    sched.set_timesteps(steps)
    c, h, w = shape or (3, prior.resolution, prior.resolution)
    x = torch.randn(len(prompts), c, h, w, generator=generator).to(prior.device)
    text = prior.embed(prompts)
    for t in sched.timesteps:
        tt = torch.full((len(prompts),), int(t), device=prior.device, dtype=torch.long)
        eps, _, _ = prior.predict_noise_cfg(x, tt, text, guidance_scale)
        x = sched.step(eps, t, x).prev_sample
    return prior.decode(x)
