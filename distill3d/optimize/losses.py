"""Regularisers of the score-distillation loop and the one place where named loss terms are weighted."""

from __future__ import annotations

import torch

from distill3d.render.volume_cpu import OrientationFunction


def orientation_loss(out: dict) -> torch.Tensor:
    """DreamFusion's orientation loss (Sec. 3.1, "R_orient"): sum_i stopgrad(w_i) max(0, n_i . d_i)^2 per ray,
    averaged over rays. d_i is the ray direction (camera -> point), so it penalises normals facing away from the
    camera. Needs the per-sample pieces ``render_field`` returns when normals were computed."""
    w = out["sample_weights"].detach()
    if "sample_dirs" not in out:  # packed by ray (render.volume_cpu): one native pass per ray
        return OrientationFunction.apply(out["sample_normals"], w, out["ray_dirs"], out["sample_offsets"]).sum() \
            / out["n_rays"]
    dot = (out["sample_normals"] * out["sample_dirs"]).sum(-1).clamp_min(0.0)
    return (w * dot * dot).sum() / out["n_rays"]


def opacity_loss(opacity: torch.Tensor, kind: str = "sqrt") -> torch.Tensor:
    """Sparsity on accumulated opacity (B, H, W).

    "sqrt": mean sqrt(alpha^2 + 0.01) (DreamFusion appendix A.2's opacity penalty, pushes towards empty);
    "entropy": mean binary entropy of alpha (pushes each pixel to 0 or 1).
    """
    if kind == "sqrt":
        return torch.sqrt(opacity * opacity + 0.01).mean()
    if kind == "entropy":
        a = opacity.clamp(1e-5, 1 - 1e-5)
        return -(a * torch.log(a) + (1 - a) * torch.log(1 - a)).mean()
    raise ValueError(f"unknown opacity loss {kind!r}")


def weighted_total(losses: dict[str, torch.Tensor], lambdas: dict[str, float]) -> torch.Tensor:
    """sum_k lambdas[k] * losses[k] over the ``loss_*`` terms; a term without a lambda is an error."""
    missing = [k for k in losses if k not in lambdas]
    if missing:
        raise KeyError(f"no lambda for loss terms {missing}; add them to DistillConfig.extra_lambdas")
    total = None
    for k, v in losses.items():
        term = lambdas[k] * v
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no loss terms")
    return total
