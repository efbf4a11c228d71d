"""Ancestral sampling from any ``Prior`` with classifier-free guidance (DDIM, Song et al. 2021), from pure noise or,
SDEdit-style (Meng et al. 2022), from given images noised to a chosen ``strength`` (img2img)."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from distill3d.priors.base import Conditioning, Prior


@torch.no_grad()
def sample_images(
    prior: Prior, prompts: list[str], steps: int = 50, guidance_scale: float = 3.0,
    generator: torch.Generator | None = None, shape: tuple[int, int, int] | None = None,
    init: torch.Tensor | None = None, strength: float = 1.0, cond: Conditioning | None = None,
) -> torch.Tensor:
    """DDIM samples for ``prompts`` -> (B, 3, H, W) in [0, 1]. ``shape`` is (C, h, w) in model space
    (default: 3 x resolution^2, right for pixel priors).

    img2img: with ``init`` (B, 3, H, W) images in [0, 1] (at the prior's resolution), x_0 = encode(init) is noised
    to the DDIM timestep at ``strength`` in (0, 1] of the schedule (``prior.add_noise``) and only the last
    ``round(steps * strength)`` DDIM steps are run (as diffusers' img2img pipelines do). strength 1 ~ pure sampling.
    ``cond``: explicit conditioning of the B images (cameras for a multi-view prior, depth for SD 2 depth).
    """
    # The prior always hands back epsilon, so the sampler is configured for epsilon whatever the model predicts.
    sched = DDIMScheduler.from_config(prior.scheduler.config, prediction_type="epsilon", clip_sample=False,
                                      set_alpha_to_one=True)
    sched.set_timesteps(steps)
    timesteps = sched.timesteps
    if init is None:
        c, h, w = shape or (3, prior.resolution, prior.resolution)
        x = torch.randn(len(prompts), c, h, w, generator=generator).to(prior.device)
    else:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        n_run = max(1, min(steps, int(round(steps * strength))))
        timesteps = timesteps[steps - n_run:]
        x0 = prior.encode_images(init.to(prior.device))
        noise = torch.randn(x0.shape, generator=generator).to(device=x0.device, dtype=x0.dtype)
        t0 = torch.full((x0.shape[0],), int(timesteps[0]), device=x0.device, dtype=torch.long)
        x = prior.add_noise(x0, noise, t0)
    text = prior.embed(prompts)
    for t in timesteps:
        tt = torch.full((len(prompts),), int(t), device=prior.device, dtype=torch.long)
        eps, _, _ = prior.predict_noise_cfg(x, tt, text, guidance_scale, cond)
        x = sched.step(eps, t, x).prev_sample
    return prior.decode(x)
