"""Configuration of the score-distillation loop (DreamFusion Sec. 3 / Appendix A, Instant-NGP optimiser settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill3d.cameras import CameraDistribution
from distill3d.shading import DEFAULT_AMBIENT


class DistillConfig(BaseModel):
    """Everything the loop needs besides the field, the prior, the prompt and the guidance."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1000, ge=1)
    # Adam as in Instant-NGP / threestudio: hash tables learn 10x faster than the MLP, beta2 0.99, eps 1e-15.
    lr_encoding: float = 1e-2
    lr_mlp: float = 1e-3
    lr_groups: dict[str, float] = Field(default_factory=dict)  # other parameter groups by name (e.g. DMTet's "sdf")
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    max_grad_norm: float | None = None
    views_per_step: int = 1
    # "random": independent cameras; "orbit": groups of the prior's views_per_sample cameras 90 degrees apart in
    # azimuth with one elevation / fov / distance (MVDream's sampling, for a multi-view prior)
    camera_sampler: Literal["random", "orbit"] = "random"
    render_size: int | None = None  # None: prior.resolution
    n_samples: int = 64
    camera: CameraDistribution = Field(default_factory=CameraDistribution)
    view_dependent_prompts: bool = True
    # Shading schedule (DreamFusion 3.1/3.2): albedo only at first, then random among the modes with random light.
    # "normal" (the normal map as colour, for SDS on geometry alone: ProlificDreamer's geometry stage) needs a
    # renderer that draws it (a mesh scene).
    albedo_only_fraction: float = 0.1
    shading_probs: dict[str, float] = Field(
        default_factory=lambda: {"albedo": 0.2, "lambertian": 0.4, "textureless": 0.4})
    light_spread_deg: float = 45.0
    ambient: float = DEFAULT_AMBIENT
    # A solid colour, or "random": a solid colour per view (per group of an orbit) drawn each step, white with
    # probability background_white_probability, else uniform RGB; the fields must then separate object from
    # background by opacity, not by colour (a white object on white, DreamFusion's random backgrounds).
    background: tuple[float, float, float] | Literal["random"] = (1.0, 1.0, 1.0)
    background_white_probability: float = Field(0.5, ge=0.0, le=1.0)
    # Loss weights: the one place named terms are weighted (see losses.weighted_total).
    lambda_sds: float = 1.0
    lambda_vsd: float = 1.0
    lambda_orient: float = 1e-2
    lambda_opacity: float = 1e-3
    opacity_loss: str = "sqrt"  # "sqrt" | "entropy"
    extra_lambdas: dict[str, float] = Field(default_factory=dict)  # e.g. {"vsd": 1.0} for guidance terms loss_vsd
    # Empty-space skipping (OccupancyCache): grid refreshed every occupancy_every steps.
    occupancy: bool = True
    occupancy_every: int = 16
    occupancy_threshold: float = 0.01
    checkpoint_every: int = 200

    @field_validator("shading_probs")
    @classmethod
    def _check_probs(cls, v: dict[str, float]) -> dict[str, float]:
        bad = set(v) - {"albedo", "lambertian", "textureless", "normal"}
        if bad or not v or min(v.values()) < 0 or sum(v.values()) <= 0:
            raise ValueError(f"shading_probs must map albedo/lambertian/textureless/normal to weights >= 0, got {v}")
        return v

    def lr_for(self, group: str) -> float:
        """Learning rate of a scene's parameter group: ``lr_groups[group]``, else the hash tables' ``lr_encoding``
        for "encoding", else ``lr_mlp``."""
        if group in self.lr_groups:
            return self.lr_groups[group]
        return self.lr_encoding if group == "encoding" else self.lr_mlp

    def lambdas(self) -> dict[str, float]:
        """Weights keyed by loss name (``loss_sds`` ...)."""
        out = {"loss_sds": self.lambda_sds, "loss_vsd": self.lambda_vsd, "loss_orient": self.lambda_orient,
               "loss_opacity": self.lambda_opacity}
        out.update({f"loss_{k}": v for k, v in self.extra_lambdas.items()})
        return out
