"""Score Distillation Sampling (DreamFusion, Poole et al. 2022, Sec. 3).

    grad_theta L_SDS = E_{t, eps}[ w(t) (eps_hat(x_t; y, t) - eps) dx/dtheta ]        (DreamFusion eq. 3)

with eps_hat the classifier-free-guided prediction (eq. 1, ``Prior.predict_noise_cfg``) and x_t = sqrt(a_t) x_0 +
sqrt(1 - a_t) eps. The U-Net Jacobian is dropped: we build the stop-gradient surrogate

    L = 1/2 * sum (x_0 - sg[x_0 - g])^2 / B,     g = w(t) (eps_hat - eps),

whose gradient w.r.t. x_0 is exactly g / B (sum over pixels, mean over the batch).
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from distill3d.cameras import Cameras
from distill3d.priors.base import Conditioning, Prior, TextEmbeddings

Weighting = Literal["dreamfusion", "uniform", "fantasia3d"]


class SDSConfig(BaseModel):
    """SDS hyper-parameters.

    t is drawn uniformly from [t_min, t_max(progress)] * T. With ``t_anneal`` set, t_max goes linearly from
    ``t_max`` at progress 0 to ``t_anneal`` at progress 1 (never below t_min).
    weighting: "dreamfusion" w(t) = 1 - alpha_bar_t (eq. 3 text), "uniform" w = 1,
    "fantasia3d" w = sqrt(alpha_bar_t) (1 - alpha_bar_t).
    grad_clip: clamp each element of g to [-grad_clip, grad_clip] (None: off). The nan guard zeroes non-finite g.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sds"] = "sds"
    guidance_scale: float = Field(100.0, ge=0.0)
    t_min: float = Field(0.02, ge=0.0, le=1.0)
    t_max: float = Field(0.98, gt=0.0, le=1.0)
    t_anneal: float | None = Field(None, gt=0.0, le=1.0)
    weighting: Weighting = "dreamfusion"
    grad_clip: float | None = Field(None, gt=0.0)
    nan_guard: bool = True


def t_range(cfg: SDSConfig, progress: float) -> tuple[float, float]:
    """Fractions (lo, hi) of T that t is drawn from at ``progress`` in [0, 1]."""
    hi = cfg.t_max
    if cfg.t_anneal is not None:
        p = min(max(progress, 0.0), 1.0)
        hi = cfg.t_max + (cfg.t_anneal - cfg.t_max) * p
    return cfg.t_min, max(hi, cfg.t_min)


def sample_timesteps(cfg: SDSConfig, progress: float, n: int, T: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) integer timesteps uniform in [round(lo * T), round(hi * T)] (clamped to [0, T - 1])."""
    lo, hi = t_range(cfg, progress)
    lo_i = min(max(int(round(lo * T)), 0), T - 1)
    hi_i = min(max(int(round(hi * T)), lo_i), T - 1)
    return torch.randint(lo_i, hi_i + 1, (n,), generator=generator)


def sds_weight(alphas_cumprod_t: torch.Tensor, weighting: str) -> torch.Tensor:
    """w(t) from alpha_bar_t (B,) -> (B,)."""
    a = alphas_cumprod_t
    if weighting == "dreamfusion":
        return 1.0 - a
    if weighting == "uniform":
        return torch.ones_like(a)
    if weighting == "fantasia3d":
        return a.sqrt() * (1.0 - a)
    raise ValueError(f"unknown SDS weighting {weighting!r}")


def resize_to_prior(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, resolution, resolution), bilinear (antialiased when shrinking), differentiable."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    down = images.shape[-1] > resolution or images.shape[-2] > resolution
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=down)


def surrogate_loss(x0: torch.Tensor, g: torch.Tensor, nan_guard: bool = True, grad_clip: float | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The stop-gradient surrogate every score-distillation gradient uses (the U-Net Jacobian dropped):
    L = 1/2 sum (x_0 - sg[x_0 - g])^2 / B, whose gradient w.r.t. x_0 (B, ...) is exactly g / B. Non-finite entries of
    g are zeroed with ``nan_guard``, elements clamped to +-``grad_clip``. Returns (L, the g used)."""
    with torch.no_grad():
        if nan_guard:
            g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        if grad_clip is not None:
            g = g.clamp(-grad_clip, grad_clip)
        target = x0.detach() - g
    return 0.5 * F.mse_loss(x0, target, reduction="sum") / x0.shape[0], g


def sds_loss(
    prior: Prior,
    images: torch.Tensor,
    text: TextEmbeddings,
    cfg: SDSConfig,
    progress: float,
    generator: torch.Generator | None = None,
    cameras: Cameras | None = None,
) -> dict:
    """SDS on rendered ``images`` (B, 3, H, W) in [0, 1] with per-image prompt embeddings ``text`` (cond (B, L, D)),
    seen from ``cameras`` (B) (read by camera-conditioned priors).

    Returns {"loss_sds": scalar whose gradient w.r.t. x_0 is w(t)(eps_hat - eps)/B, "t": (B,) long,
    "grad_norm": float (norm of g over the batch), "w": (B,)}.
    """
    B, dev = images.shape[0], images.device
    x0 = prior.encode_images(resize_to_prior(images, prior.resolution))
    t = sample_timesteps(cfg, progress, B, prior.num_train_timesteps, generator).to(dev)
    noise = torch.randn(x0.shape, generator=generator).to(device=dev, dtype=x0.dtype)
    with torch.no_grad():
        x_t = prior.add_noise(x0.detach(), noise, t)
        cond = None if cameras is None else Conditioning(cameras=cameras)
        eps_hat, _, _ = prior.predict_noise_cfg(x_t, t, text, cfg.guidance_scale, cond)
        w = sds_weight(prior.alphas_cumprod.to(dev)[t].to(x0.dtype), cfg.weighting)
        g = w.view(-1, *([1] * (x0.dim() - 1))) * (eps_hat.to(x0.dtype) - noise)
    loss, g = surrogate_loss(x0, g, cfg.nan_guard, cfg.grad_clip)
    return {"loss_sds": loss, "t": t.detach(), "grad_norm": float(g.norm()), "w": w.detach()}


class Guidance(Protocol):
    """What the optimisation loop calls each step: ``guidance(prior, images, text, progress, generator=,
    cameras=)`` -> dict with at least one ``loss_*`` scalar (SDS, VSD, multi-view SDS ...). ``cameras`` are the B
    views the images were rendered from. Objects with trainable state (VSD's LoRA) also expose ``state_dict()`` /
    ``load_state_dict()`` and are checkpointed with the field."""

    def __call__(self, prior: Prior, images: torch.Tensor, text: TextEmbeddings, progress: float,
                 generator: torch.Generator | None = None, cameras: Cameras | None = None) -> dict: ...


class SDSGuidance:
    """``sds_loss`` bound to a config: the default ``Guidance``."""

    def __init__(self, cfg: SDSConfig | None = None):
        self.cfg = cfg or SDSConfig()

    def __call__(self, prior: Prior, images: torch.Tensor, text: TextEmbeddings, progress: float,
                 generator: torch.Generator | None = None, cameras: Cameras | None = None) -> dict:
        return sds_loss(prior, images, text, self.cfg, progress, generator, cameras)
