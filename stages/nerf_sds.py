"""Stage `nerf_sds`: optimise a radiance field with score distillation (DreamFusion, Poole et al. 2022, Sec. 3).

Output: the field (`field.json` + `field.safetensors`), `history.json` (loss curves, timings split into
render / prior / backward) and `views.png` (a ring of albedo and shaded renders of the field).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from distill3d.fields.nerf import FieldConfig
from distill3d.guidance.sds import SDSConfig
from distill3d.optimize.config import DistillConfig
from stages.core.store import work_dir
from stages.shared.field_outputs import save_field_outputs
from stages.shared.prompted import PromptedParams, check_prompted, load_stage_prior

NAME = "nerf_sds"
INPUTS = ("prior",)


class Params(PromptedParams):
    field: FieldConfig = Field(default_factory=FieldConfig)
    optimize: DistillConfig = Field(default_factory=DistillConfig)
    guidance: SDSConfig = Field(default_factory=SDSConfig)
    preview_views: int = Field(8, ge=1)
    preview_size: int = Field(64, ge=8)


check = check_prompted


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    from distill3d.fields.nerf import RadianceField
    from distill3d.optimize.loop import distill
    from distill3d.optimize.scene import volume_scene

    prior = load_stage_prior(params, inputs["prior"])
    field = RadianceField(params.field)
    history = distill([volume_scene(field, params.optimize, params.device)], prior, params.prompt, params.optimize,
                      seed=params.seed, device=params.device, work_dir=work_dir(NAME, params, inputs),
                      guidance=params.guidance)
    return save_field_outputs(field, history, out, params.preview_views, params.preview_size)
