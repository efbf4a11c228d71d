"""Stage `nerf_sds`: optimise a radiance field with score distillation (DreamFusion, Poole et al. 2022, Sec. 3), or
several (particles) with Variational Score Distillation (ProlificDreamer, Wang et al. 2023, Sec. 4).

`guidance` scores the renders: SDS (kind "sds", the default), VSD (kind "vsd": distill3d.guidance.vsd, a
camera-conditioned LoRA of the prior trained on all particles' renders; `particles` fields are optimised together
against it) or multi-view SDS (kind "multiview": MVDream, with a multi-view prior and `optimize.camera_sampler:
orbit`).

Output: the field (`field.json` + `field.safetensors`; particles: `particles/<i>/`, particle 0 mirrored at the top),
`history.json` (loss curves, timings split into render / prior / backward) and `views.png` (a ring of albedo and
shaded renders of each field).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from distill3d.fields.nerf import FieldConfig
from distill3d.guidance.choice import GuidanceConfig
from distill3d.guidance.sds import SDSConfig
from distill3d.optimize.config import DistillConfig
from stages.core.protocol import StageError
from stages.core.store import work_dir
from stages.shared.field_outputs import save_field_outputs
from stages.shared.prompted import PromptedParams, check_prompted, load_stage_prior

NAME = "nerf_sds"
INPUTS = ("prior",)


class Params(PromptedParams):
    field: FieldConfig = Field(default_factory=FieldConfig)
    optimize: DistillConfig = Field(default_factory=DistillConfig)
    guidance: GuidanceConfig = Field(default_factory=SDSConfig)
    particles: int = Field(1, ge=1, le=16, description="fields optimised together (VSD's particles)")
    preview_views: int = Field(8, ge=1)
    preview_size: int = Field(64, ge=8)


def check(params: Params, inputs: dict[str, Path]) -> None:
    check_prompted(params, inputs)
    if params.particles > 1 and params.guidance.kind != "vsd":
        raise StageError(f"{params.particles} particles need VSD (set guidance.kind: vsd): under "
                         f"{params.guidance.kind} they would be independent runs; use several seeds instead")


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    from distill3d.fields.nerf import RadianceField
    from distill3d.guidance.choice import guidance_for
    from distill3d.optimize.loop import distill
    from distill3d.optimize.scene import volume_scene

    prior = load_stage_prior(params, inputs["prior"])
    fields = [RadianceField(params.field) for _ in range(params.particles)]  # each drawn from the seeded RNG
    cfg = params.optimize
    with guidance_for(params.guidance, prior) as guidance:
        history = distill([volume_scene(f, cfg, params.device) for f in fields], prior, params.prompt, cfg,
                          seed=params.seed, device=params.device, work_dir=work_dir(NAME, params, inputs),
                          guidance=guidance)
    return save_field_outputs(fields, history, out, params.preview_views, params.preview_size)
