"""Texture fine-tuning on a fixed mesh (TextMesh Sec. 3.3):

    grad L_texture = grad L_MSE + lambda_sds * grad L_SDS,

L_MSE the mean squared error between shaded renders of the texture in the canonical views and the pseudo ground
truth, L_SDS score distillation (``guidance.sds.sds_loss``, DreamFusion's view-dependent prompts) on shaded renders
from random cameras. The texture (a UV atlas from xatlas) is parameterised by logits, texture = sigmoid(logits),
initialised from the mesh's current texture. Random SDS views are drawn from a pool of ``sds_view_pool`` cameras
rasterised once (the mesh never moves), so a step costs two texture lookups and one prior call.
Loss terms are weighted in one place (``optimize.losses.weighted_total``): {"loss_mse": lambda_mse, "loss_sds":
lambda_sds}.
"""

from __future__ import annotations

import time

import torch
from pydantic import BaseModel, ConfigDict, Field

from distill3d.cameras import CameraDistribution, Cameras, sample_cameras
from distill3d.guidance.prompts import ViewPrompts
from distill3d.guidance.sds import SDSConfig, sds_loss
from distill3d.mesh.types import TexturedMesh
from distill3d.optimize.losses import weighted_total
from distill3d.priors.base import Prior
from distill3d.texture.render import FragmentCache, shade_texture


class TextureFinetuneConfig(BaseModel):
    """Settings of ``finetune_texture``."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(200, ge=0)
    lr: float = Field(0.05, gt=0)  # Adam on texture logits
    lambda_mse: float = Field(1.0, ge=0)
    lambda_sds: float = Field(1e-4, ge=0)
    lambda_tv: float = Field(0.0, ge=0)  # total variation of the atlas (not in TextMesh; see texture_tv)
    sds_views_per_step: int = Field(1, ge=1)
    sds_view_pool: int = Field(64, ge=1)
    sds_render_size: int | None = None  # None: the prior's resolution
    camera: CameraDistribution = Field(default_factory=CameraDistribution)
    guidance: SDSConfig = Field(default_factory=lambda: SDSConfig(guidance_scale=30.0, t_max=0.6))
    ssaa: int = Field(2, ge=1)
    # Size at which renders meet the pseudo ground truth in L_MSE (both area-averaged to it). Set it to the prior's
    # resolution when that is below the canonical views' size (the toy prior: 32 for 64-pixel views): the pseudo-GT
    # holds no detail beyond it, and fitting its upsampling blur lightens the colour along every silhouette.
    # None: the canonical views' size.
    mse_resolution: int | None = Field(None, ge=1)


def _logit(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x) - torch.log1p(-x)


def texture_tv(texture: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring texels of an (Ht, Wt, 3) atlas: pulls each chart towards locally
    constant colour, so per-pixel disagreements between pseudo-GT views average out instead of being painted in."""
    return (texture[1:] - texture[:-1]).abs().mean() + (texture[:, 1:] - texture[:, :-1]).abs().mean()


def finetune_texture(
    mesh: TexturedMesh, cams: Cameras, targets: torch.Tensor, prior: Prior | None, prompt: str,
    cfg: TextureFinetuneConfig, seed: int = 0, background: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """Optimise ``mesh.texture`` (Ht, Wt, 3; needs uv) so shaded renders from ``cams`` match ``targets``
    (B, H, W, 3) in [0, 1], plus ``lambda_sds`` * SDS from random views under ``prior`` (skipped when lambda_sds
    is 0 or ``prior`` is None). Returns (texture (Ht, Wt, 3) in [0, 1], history {losses: {name: [..]}, seconds}).
    """
    if mesh.uv is None or mesh.texture is None:
        raise ValueError("finetune_texture needs a mesh with uv and a texture")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    size = targets.shape[1]
    canon = FragmentCache.build(mesh, cams, size, ssaa=cfg.ssaa)
    use_sds = prior is not None and cfg.lambda_sds > 0
    pool = prompts = None
    if use_sds:
        pool_cams = sample_cameras(cfg.sds_view_pool, cfg.camera, generator=gen)
        pool = FragmentCache.build(mesh, pool_cams, cfg.sds_render_size or prior.resolution, ssaa=1)
        prompts = ViewPrompts(prior, prompt)
    def to_mse_size(images: torch.Tensor) -> torch.Tensor:
        if cfg.mse_resolution is None or cfg.mse_resolution >= images.shape[1]:
            return images
        x = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2), size=(cfg.mse_resolution,) * 2, mode="area")
        return x.permute(0, 2, 3, 1)

    target_small = to_mse_size(targets)
    logits = torch.nn.Parameter(_logit(mesh.texture.float().clone()))
    opt = torch.optim.Adam([logits], lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15)
    lambdas = {"loss_mse": cfg.lambda_mse, "loss_sds": cfg.lambda_sds, "loss_tv": cfg.lambda_tv}
    history: dict = {"losses": {}, "seconds": 0.0}
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        texture = torch.sigmoid(logits)
        pred = shade_texture(texture, canon, background=background)["rgb"]
        losses = {"loss_mse": ((to_mse_size(pred) - target_small) ** 2).mean()}
        if cfg.lambda_tv > 0:
            losses["loss_tv"] = texture_tv(texture)
        if use_sds:
            idx = torch.randint(len(pool), (cfg.sds_views_per_step,), generator=gen)
            imgs = shade_texture(texture, pool.select(idx), background=background)["rgb"].permute(0, 3, 1, 2)
            text = prompts.for_cameras(pool_cams[idx.tolist()])
            losses["loss_sds"] = sds_loss(prior, imgs, text, cfg.guidance, step / max(cfg.steps - 1, 1), gen)["loss_sds"]
        total = weighted_total(losses, lambdas)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        for k, v in losses.items():
            history["losses"].setdefault(k, []).append(float(v.detach()))
    history["seconds"] = time.perf_counter() - t0
    return torch.sigmoid(logits).detach(), history
