"""Stage `nerf_sds`: optimise a radiance field with score distillation (DreamFusion, Poole et al. 2022, Sec. 3).

Output: the field (`field.json` + `field.safetensors`), `history.json` (loss curves, timings split into
render / prior / backward) and `views.png` (a ring of albedo and shaded renders of the field).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from distill3d.fields.nerf import FieldConfig
from distill3d.guidance.sds import SDSConfig
from distill3d.optimize.config import DistillConfig
from stages.common import StageError, StageParams, work_dir
from stages.prior_check import check_prompt_for_prior

NAME = "nerf_sds"
INPUTS = ("prior",)


class Params(StageParams):
    prompt: str = Field("", description="text prompt (for the toy prior: words of the toy vocabulary)")
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"
    field: FieldConfig = Field(default_factory=FieldConfig)
    optimize: DistillConfig = Field(default_factory=DistillConfig)
    guidance: SDSConfig = Field(default_factory=SDSConfig)
    preview_views: int = Field(8, ge=1)
    preview_size: int = Field(64, ge=8)


def check(params: Params, inputs: dict[str, Path]) -> None:
    check_prompt_for_prior(params.prompt, inputs["prior"])


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import json

    import torch

    from distill3d.cameras import ring_cameras
    from distill3d.fields.nerf import RadianceField
    from distill3d.optimize.loop import distill_field
    from distill3d.priors.loading import load_prior
    from distill3d.render.volume import render_field
    from distill3d.viz.grid import save_grid

    if params.device == "cuda" and not torch.cuda.is_available():
        raise StageError("nerf_sds.device is cuda but no CUDA device is available: use --device cpu")
    prior = load_prior(inputs["prior"], device=params.device)
    torch.manual_seed(params.seed)
    field = RadianceField(params.field)
    history = distill_field(field, prior, params.prompt, params.optimize, seed=params.seed, device=params.device,
                            work_dir=work_dir(NAME, params, inputs), guidance=params.guidance)
    field.cpu().eval().save(out)
    (out / "history.json").write_text(json.dumps(history))
    cams = ring_cameras(params.preview_views)
    with torch.no_grad():
        rows = [render_field(field, cams, params.preview_size, shading=s, stratified=False)["rgb"]
                for s in ("albedo", "lambertian")]
    save_grid(torch.cat(rows), out / "views.png", ncols=params.preview_views)
    last = {k: sum(v[-50:]) / max(1, len(v[-50:])) for k, v in history["losses"].items()}
    return {"seconds": history["seconds"], "steps": history["steps"], "final_losses": last}
