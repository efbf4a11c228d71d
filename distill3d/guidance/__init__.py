"""Score-distillation guidance: SDS and view-dependent prompts."""

from distill3d.guidance.prompts import ViewPrompts
from distill3d.guidance.sds import Guidance, SDSConfig, SDSGuidance, sds_loss, sds_weight, t_range

__all__ = ["ViewPrompts", "Guidance", "SDSConfig", "SDSGuidance", "sds_loss", "sds_weight", "t_range"]
