"""Multi-view score distillation (MVDream, Shi et al. 2023, sec. 3.3 and appendix: "multi-view score distillation").

Each step scores F = ``prior.views_per_sample`` (4) renders of the object *together*: the loop renders them from a
group of cameras sampled as MVDream samples them (``distill3d.cameras.sample_multiview_cameras``: one random azimuth
offset, azimuths 90 degrees apart, shared elevation / fov / distance; consecutive cameras in the batch, group-major)
and passes those cameras, which the multi-view prior reads. Per group of F views:

* one t for all F views, t ~ U[t_lo(p), t_hi(p)] T, the range annealed linearly over the run from ``t_start`` to
  ``t_end`` by progress ``anneal_until`` (MVDream's threestudio config: from [0.98, 0.98] to [0.02, 0.50] by step
  8,000 of 10,000), then constant;
* independent noise per view, x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps;
* one batched call of the prior with classifier-free guidance (eq. 1 of DreamFusion; ``Prior.predict_noise_cfg``):
  eps_w = eps_u + w (eps_c - eps_u).

Two forms of the gradient on x_0 (``loss``):

* ``"x0"`` (MVDream's default, sec. 3.3: SDS written as an x0-reconstruction loss): x0_hat = (x_t - sqrt(1 - a)
  eps_w) / sqrt(a), optionally *CFG-rescaled* (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps
  are Flawed", sec. 3.4, applied by MVDream to x0 with phi = 0.5): with x0_c the reconstruction from eps_c alone
  and std taken over all F views, channels and pixels of a group,

      x0_resc = x0_hat * std(x0_c) / std(x0_hat),     x0_hat <- phi x0_resc + (1 - phi) x0_hat,

  and L = 1/2 ||x_0 - sg[x0_hat]||^2 / B, so grad_{x_0} L = (x_0 - x0_hat) / B. Without rescale this equals SDS with
  w(t) = sqrt((1 - a_t) / a_t): x_0 - x0_hat = sqrt((1 - a) / a) (eps_w - eps).
* ``"sds"``: DreamFusion's eq. 3 on the group, g = w(t) (eps_w - eps) with ``weighting`` as in ``SDSConfig``.

The rescale is what keeps large guidance scales (MVDream: 50) from over-saturating; ``rescale: 0`` turns it off.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill3d.cameras import CameraDistribution, Cameras, sample_multiview_cameras
from distill3d.guidance.sds import Weighting, resize_to_prior, sds_weight
from distill3d.priors.base import Conditioning, Prior, PriorError, TextEmbeddings


class MultiViewSDSConfig(BaseModel):
    """Multi-view SDS hyper-parameters (defaults: MVDream's SD 2.1 config).

    t is drawn per group uniformly from [lo, hi] * T where (lo, hi) moves linearly from ``t_start`` at progress 0 to
    ``t_end`` at progress ``anneal_until`` and stays there. ``loss``: "x0" (x0 reconstruction, with CFG ``rescale``
    phi in [0, 1]) or "sds" (``weighting`` w(t)). ``grad_clip`` clamps each element of the gradient; the nan guard
    zeroes non-finite entries.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["multiview"] = "multiview"
    guidance_scale: float = Field(50.0, ge=0.0)
    t_start: tuple[float, float] = (0.98, 0.98)
    t_end: tuple[float, float] = (0.02, 0.50)
    anneal_until: float = Field(0.8, gt=0.0, le=1.0)
    loss: Literal["x0", "sds"] = "x0"
    rescale: float = Field(0.5, ge=0.0, le=1.0)
    weighting: Weighting = "dreamfusion"
    grad_clip: float | None = Field(None, gt=0.0)
    nan_guard: bool = True

    @model_validator(mode="after")
    def _ranges(self) -> "MultiViewSDSConfig":
        for name in ("t_start", "t_end"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"{name} must be (lo, hi) with 0 <= lo <= hi <= 1, got {(lo, hi)}")
        return self


def multiview_t_range(cfg: MultiViewSDSConfig, progress: float) -> tuple[float, float]:
    """Fractions (lo, hi) of T that t is drawn from at ``progress`` in [0, 1] (linear anneal, then constant)."""
    s = min(max(progress, 0.0), 1.0) / cfg.anneal_until
    s = min(s, 1.0)
    lo = cfg.t_start[0] + (cfg.t_end[0] - cfg.t_start[0]) * s
    hi = cfg.t_start[1] + (cfg.t_end[1] - cfg.t_start[1]) * s
    return lo, max(hi, lo)


def sample_group_timesteps(cfg: MultiViewSDSConfig, progress: float, n_groups: int, views: int, T: int,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """(n_groups * views,) integer timesteps: one draw per group, uniform in [round(lo T), round(hi T)] (clamped to
    [0, T - 1]), repeated for the group's views."""
    lo, hi = multiview_t_range(cfg, progress)
    lo_i = min(max(int(round(lo * T)), 0), T - 1)
    hi_i = min(max(int(round(hi * T)), lo_i), T - 1)
    return torch.randint(lo_i, hi_i + 1, (n_groups,), generator=generator).repeat_interleave(views)


def rescale_x0(x0_guided: torch.Tensor, x0_cond: torch.Tensor, views: int, phi: float) -> torch.Tensor:
    """CFG rescale in x0 space per group (Lin et al. 2024, sec. 3.4; MVDream's ``recon_std_rescale``).

    x0_guided, x0_cond: (n F, C, h, w), consecutive groups of F = ``views``. Returns
    phi * x0_guided * std_g(x0_cond) / std_g(x0_guided) + (1 - phi) * x0_guided, std_g over each group's F views,
    channels and pixels (unbiased, as torch.std), with 1e-8 added to both stds."""
    shape = x0_guided.shape
    g = x0_guided.reshape(-1, views, *shape[1:])
    c = x0_cond.reshape(-1, views, *shape[1:])
    dims = tuple(range(1, g.dim()))
    factor = (c.std(dim=dims, keepdim=True) + 1e-8) / (g.std(dim=dims, keepdim=True) + 1e-8)
    return (phi * g * factor + (1.0 - phi) * g).reshape(shape)


def guided_x0(x_t: torch.Tensor, alpha_bar: torch.Tensor, eps_w: torch.Tensor, eps_c: torch.Tensor, views: int,
              rescale: float) -> torch.Tensor:
    """Multi-view SDS's target: the one-step prediction x0_hat = (x_t - sqrt(1 - a) eps_w) / sqrt(a) from the guided
    epsilon, CFG-rescaled (``rescale_x0`` with phi = ``rescale``, x0_c from ``eps_c``) when ``rescale`` > 0.
    ``alpha_bar`` broadcasts against x_t ((n F, 1, 1, 1))."""
    x0_hat = (x_t - (1 - alpha_bar).sqrt() * eps_w) / alpha_bar.sqrt()
    if rescale > 0:
        x0_cond = (x_t - (1 - alpha_bar).sqrt() * eps_c) / alpha_bar.sqrt()
        x0_hat = rescale_x0(x0_hat, x0_cond, views, rescale)
    return x0_hat


def multiview_sds_loss(
    prior: Prior,
    images: torch.Tensor,
    text: TextEmbeddings,
    cfg: MultiViewSDSConfig,
    progress: float,
    generator: torch.Generator | None = None,
    cameras: Cameras | None = None,
) -> dict:
    """Multi-view SDS on renders ``images`` (B, 3, H, W) in [0, 1], B = F k for a prior with F =
    ``prior.views_per_sample``: consecutive groups of F images are the views of one sample, rendered from
    ``cameras`` (B) (required). ``text.cond`` is (B, L, D) or (1, L, D) (one prompt for all).

    Returns {"loss_sds": scalar whose gradient w.r.t. x_0 (the prior's encoding of the images) is g / B, "t": (B,) long
    (equal within a group), "grad_norm": float (norm of g over the batch), "w": (B,) the effective weight on
    (eps_w - eps) (sqrt((1 - a) / a) for "x0", w(t) for "sds")}. Raises PriorError for missing cameras or a batch that
    is not whole groups.
    """
    views = max(int(getattr(prior, "views_per_sample", 1)), 1)
    B, dev = images.shape[0], images.device
    if cameras is None:
        raise PriorError(f"multi-view SDS needs the cameras of the {B} views (groups of {views} from "
                         "sample_multiview_cameras)")
    if len(cameras) != B or B % views:
        raise PriorError(f"multi-view SDS scores groups of {views} views: got {B} images and {len(cameras)} cameras")
    x0 = prior.encode_images(resize_to_prior(images, prior.resolution))
    t = sample_group_timesteps(cfg, progress, B // views, views, prior.num_train_timesteps, generator).to(dev)
    noise = torch.randn(x0.shape, generator=generator).to(device=dev, dtype=x0.dtype)
    if text.cond.shape[0] == 1 and B > 1:
        text = TextEmbeddings(cond=text.cond.expand(B, -1, -1), uncond=text.uncond)
    with torch.no_grad():
        x_t = prior.add_noise(x0.detach(), noise, t)
        eps_w, eps_c, _ = prior.predict_noise_cfg(x_t, t, text, cfg.guidance_scale, Conditioning(cameras=cameras))
        eps_w, eps_c = eps_w.to(x0.dtype), eps_c.to(x0.dtype)
        a = prior.alphas_cumprod.to(dev)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        if cfg.loss == "x0":
            g = x0.detach() - guided_x0(x_t, a, eps_w, eps_c, views, cfg.rescale)
            w = ((1 - a) / a).sqrt().flatten()
        else:
            w = sds_weight(a.flatten(), cfg.weighting)
            g = w.view_as(a) * (eps_w - noise)
        if cfg.nan_guard:
            g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        if cfg.grad_clip is not None:
            g = g.clamp(-cfg.grad_clip, cfg.grad_clip)
        target = x0.detach() - g
    loss = 0.5 * F.mse_loss(x0, target, reduction="sum") / B
    return {"loss_sds": loss, "t": t.detach(), "grad_norm": float(g.norm()), "w": w.detach()}


class MultiViewSDSGuidance:
    """``multiview_sds_loss`` bound to a config: a ``distill3d.guidance.sds.Guidance`` for multi-view priors.

    The loop must render ``prior.views_per_sample`` views per group from cameras of
    ``sample_multiview_cameras`` (consecutive, group-major) and pass them as ``cameras``. Its term is ``loss_sds``
    (weighted by the loop's ``lambda_sds``).
    """

    def __init__(self, cfg: MultiViewSDSConfig | None = None):
        self.cfg = cfg or MultiViewSDSConfig()

    def __call__(self, prior: Prior, images: torch.Tensor, text: TextEmbeddings, progress: float,
                 generator: torch.Generator | None = None, cameras: Cameras | None = None) -> dict:
        return multiview_sds_loss(prior, images, text, self.cfg, progress, generator, cameras)

    @staticmethod
    def sample_cameras(prior: Prior, n_views: int, dist: CameraDistribution = CameraDistribution(),
                       generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Cameras:
        """The ``n_views`` cameras of one step for ``prior``: n_views / F groups from ``sample_multiview_cameras``
        (F = ``prior.views_per_sample``), group-major. PriorError unless n_views is a positive multiple of F."""
        views = max(int(getattr(prior, "views_per_sample", 1)), 1)
        if n_views < views or n_views % views:
            raise PriorError(f"multi-view SDS renders whole groups of {views} views per step, got {n_views} views")
        return sample_multiview_cameras(n_views // views, views, dist, generator=generator, device=device)
