"""The score-distillation optimisation loop shared by methods."""

from distill3d.optimize.config import DistillConfig
from distill3d.optimize.loop import choose_shading, distill_field, make_optimizer
from distill3d.optimize.losses import opacity_loss, orientation_loss, weighted_total

__all__ = ["DistillConfig", "distill_field", "choose_shading", "make_optimizer", "opacity_loss", "orientation_loss",
           "weighted_total"]
