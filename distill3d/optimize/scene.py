"""What the distillation loop optimises: a *scene*, i.e. parameters plus the differentiable renderer that turns them
into images. The loop (distill3d/optimize/loop.py) never renders anything itself, so the same loop optimises a
volume-rendered field (DreamFusion, TextMesh), a rasterised DMTet mesh (Magic3D, ProlificDreamer's geometry stage)
or several scenes at once (ProlificDreamer's particles).

A scene is an ``nn.Module`` with::

    render(cams, size, *, shading, light_dir, background, ambient, generator) -> dict
        rgb (B, H, W, 3) composited over ``background`` (B, 3); opacity (B, H, W); optionally normal, depth
    losses(out, generator) -> {"loss_<name>": scalar}   its own regularisers, weighted by DistillConfig.lambdas()
    param_groups() -> {group: [parameters]}              learning-rate groups (DistillConfig.lr_for)
    step_begin(step, generator) -> None                  bookkeeping before a step (e.g. an occupancy grid refresh)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from distill3d.cameras import Cameras
from distill3d.optimize.config import DistillConfig
from distill3d.optimize.losses import opacity_loss, orientation_loss
from distill3d.render.volume import OccupancyCache, render_field

Regularizers = Callable[[nn.Module, dict, torch.Generator], dict[str, torch.Tensor]]


class Scene(Protocol):
    """See the module docstring."""

    def render(self, cams: Cameras, size: int, *, shading: str, light_dir: torch.Tensor | None,
               background: torch.Tensor, ambient: float, generator: torch.Generator | None = None) -> dict: ...

    def losses(self, out: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]: ...

    def param_groups(self) -> dict[str, list[nn.Parameter]]: ...

    def step_begin(self, step: int, generator: torch.Generator | None = None) -> None: ...


class VolumeScene(nn.Module):
    """A field (anything ``render.volume.render_field`` takes: ``RadianceField``, ``SDFField``) rendered by volume
    rendering with ``n_samples`` stratified samples per ray and, when ``occupancy``, an occupancy cache for
    empty-space skipping refreshed every ``occupancy_every`` steps.

    Its losses: DreamFusion's orientation loss (when normals were rendered) and opacity penalty (``opacity_loss``:
    "sqrt" | "entropy"), plus ``regularizers(field, out, generator)`` (e.g. the SDF's eikonal term)."""

    def __init__(self, field: nn.Module, *, n_samples: int = 64, occupancy: bool = True, occupancy_every: int = 16,
                 occupancy_threshold: float = 0.01, opacity: str = "sqrt", regularizers: Regularizers | None = None,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.field = field.to(device)
        self.n_samples = n_samples
        self.opacity = opacity
        self.regularizers = regularizers
        # nerfacc's estimator on CUDA, a torch grid elsewhere: chosen by the device it is built on
        self.occupancy = OccupancyCache(field.bound, n_samples, update_every=occupancy_every,
                                        threshold=occupancy_threshold, device=device) if occupancy else None

    def step_begin(self, step: int, generator: torch.Generator | None = None) -> None:
        if self.occupancy is not None:
            self.occupancy.update(self.field, step, generator=generator)

    def render(self, cams: Cameras, size: int, *, shading: str = "albedo", light_dir: torch.Tensor | None = None,
               background: torch.Tensor | float = 1.0, ambient: float = 0.1,
               generator: torch.Generator | None = None, stratified: bool = True) -> dict:
        return render_field(self.field, cams, size, n_samples=self.n_samples, shading=shading, light_dir=light_dir,
                            ambient=ambient, background=background, stratified=stratified, generator=generator,
                            occupancy=self.occupancy)

    def losses(self, out: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        terms = {}
        if "sample_weights" in out:
            terms["loss_orient"] = orientation_loss(out)
        terms["loss_opacity"] = opacity_loss(out["opacity"], self.opacity)
        if self.regularizers is not None:
            terms.update(self.regularizers(self.field, out, generator))
        return terms

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        if hasattr(self.field, "param_groups"):
            return self.field.param_groups()
        return {"mlp": list(self.field.parameters())}


def volume_scene(field: nn.Module, cfg: DistillConfig, device: torch.device | str = "cpu",
                 regularizers: Regularizers | None = None) -> VolumeScene:
    """A ``VolumeScene`` of ``field`` with the loop config's sampling, occupancy and opacity settings."""
    return VolumeScene(field, n_samples=cfg.n_samples, occupancy=cfg.occupancy, occupancy_every=cfg.occupancy_every,
                       occupancy_threshold=cfg.occupancy_threshold, opacity=cfg.opacity_loss,
                       regularizers=regularizers, device=device)
