"""Pseudo ground truth by img2img (TextMesh Sec. 3.3; SDEdit, Meng et al. 2022): the prior refines renders of the
mesh's current texture, noised to ``strength`` and denoised with classifier-free guidance, and the result is kept
only inside the object's mask (outside it the original background stays).

Layout. TextMesh tiles the 4 canonical views 2x2 into one image so the diffusion model sees them together
(consistent colours across views). ``layout="tiled"`` does exactly that: the tile is resized to the prior's
resolution, refined with the plain prompt, resized back and split. The toy prior works at 32x32, where a 2x2 tile
leaves 16x16 pixels per view -- too few for it -- so the default ``layout="per_view"`` refines the 4 views as one
batch at the prior's resolution, each with its view phrase (front / side / back / side).

Depth. TextMesh refines with a depth-conditioned model (SD 2 depth) so the refined views keep the mesh's shape.
Given the views' ``depth``, a ``depth_conditioned`` prior sees it (tiled like the views) in every denoising step
(``Conditioning.depth``); other priors (the toy prior, text-to-image SD) ignore it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from distill3d.guidance.sds import resize_to_prior
from distill3d.priors.base import Conditioning, Prior
from distill3d.priors.sampling import sample_images
from distill3d.texture.canonical import tile_2x2, untile_2x2


class PseudoGTConfig(BaseModel):
    """img2img settings: ``strength`` in (0, 1] (fraction of the DDIM schedule re-run), CFG weight, DDIM steps."""

    model_config = ConfigDict(extra="forbid")

    strength: float = Field(0.5, gt=0.0, le=1.0)
    guidance_scale: float = 7.5
    steps: int = Field(50, ge=1)
    layout: str = Field("per_view", pattern="^(per_view|tiled)$")
    view_prompts: bool = True
    mask_threshold: float = Field(0.5, ge=0.0, le=1.0)  # pixels with coverage above this take the refined colour
    # img2img runs per view, averaged: one SDEdit sample carries its noise into every texel the MSE fits; the mean
    # of several estimates E[x_0 | x_t] instead (the texture's colour error follows it, see the stage notes).
    samples: int = Field(1, ge=1)


def img2img(prior: Prior, images: torch.Tensor, prompts: list[str], strength: float, guidance_scale: float,
            steps: int, generator: torch.Generator | None = None,
            depth: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> refined (B, 3, H, W): resized to the prior's resolution, noised to ``strength``,
    DDIM-denoised with CFG (``priors.sampling.sample_images``), resized back to H x W. ``depth``: the views'
    (depth, coverage), each (B, H, W), for a depth-conditioned prior."""
    H, W = images.shape[-2:]
    x = resize_to_prior(images, prior.resolution)
    cond = None if depth is None else Conditioning(depth=depth[0], mask=depth[1])
    out = sample_images(prior, prompts, steps=steps, guidance_scale=guidance_scale, generator=generator, init=x,
                        strength=strength, cond=cond)
    if out.shape[-2:] != (H, W):
        out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=False)
    return out.clamp(0.0, 1.0)


@torch.no_grad()
def pseudo_ground_truth(prior: Prior, views: torch.Tensor, masks: torch.Tensor, prompt: str, cfg: PseudoGTConfig,
                        view_phrases: list[str] | None = None, generator: torch.Generator | None = None,
                        background: float = 1.0, depth: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Refine 4 canonical views (4, H, W, 3) with coverage ``masks`` (4, H, W) into pseudo ground truth
    (``depth`` (4, H, W): the views' depth, read by a depth-conditioned prior).

    Returns refined (4, H, W, 3) (the prior's output everywhere), pseudo_gt (4, H, W, 3) = refined inside the mask
    (coverage > mask_threshold), the input view outside, and ``keep`` (4, H, W) bool (the mask used).
    """
    imgs = views.permute(0, 3, 1, 2)  # (4, 3, H, W)
    k = cfg.samples
    if cfg.layout == "tiled":
        tile = tile_2x2(views).permute(2, 0, 1)[None]  # (1, 3, 2H, 2W)
        geometry = None if depth is None else (tile_2x2(depth)[None], tile_2x2(masks)[None])
        out = img2img(prior, tile.expand(k, -1, -1, -1), [prompt] * k, cfg.strength, cfg.guidance_scale, cfg.steps,
                      generator, geometry)
        refined = untile_2x2(out.mean(0).permute(1, 2, 0))
    else:
        phrases = view_phrases or ["front", "side", "back", "side"]
        prompts = [f"{prompt}, {v} view" for v in phrases] if cfg.view_prompts else [prompt] * len(phrases)
        geometry = None if depth is None else (depth, masks)
        out = img2img(prior, imgs.repeat(k, 1, 1, 1), prompts * k, cfg.strength, cfg.guidance_scale, cfg.steps,
                      generator, geometry)
        refined = out.view(k, *imgs.shape).mean(0).permute(0, 2, 3, 1)
    keep = masks > cfg.mask_threshold
    pseudo = torch.where(keep[..., None], refined, views)
    return {"refined": refined, "pseudo_gt": pseudo, "keep": keep}
