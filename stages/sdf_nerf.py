"""Stage `sdf_nerf`: optimise an SDF field with score distillation (TextMesh, Tsalicoglou et al. 2023, Sec. 3.1).

The field (distill3d.fields.sdf.SDFField) is rendered volumetrically with VolSDF's density; the loop is DreamFusion's
(distill3d.optimize.loop.distill: same cameras, shading schedule, view-dependent prompts and SDS) plus the eikonal
loss `lambda_eikonal * mean(|grad s| - 1)^2` as a regulariser of its volume scene. The SDF starts as a sphere, or,
with the optional input `init_mesh` (any artifact holding a mesh.glb, e.g. DreamFusion's extract_mesh or
export_asset output), is first pretrained to that mesh's signed distance with pysdf.

Output: the field (`field.json` + `field.safetensors`, type SDFField, so `extract_mesh` takes it as its `nerf`
input), `history.json` and `views.png` (a ring of albedo and shaded renders).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from distill3d.fields.sdf import SDFConfig
from distill3d.fields.sdf_init import MeshInitConfig
from distill3d.guidance.sds import SDSConfig
from distill3d.optimize.config import DistillConfig
from stages.core.protocol import require_file
from stages.core.store import work_dir
from stages.shared.defaults import section_defaults
from stages.shared.field_outputs import save_field_outputs
from stages.shared.prompted import PromptedParams, check_prompted, load_stage_prior

NAME = "sdf_nerf"
INPUTS = ("prior",)
OPTIONAL_INPUTS = ("init_mesh",)


# DistillConfig defaults that differ for an SDF (kept when params.yaml sets other `optimize` keys): hash tables at a
# lower learning rate (SDS noise otherwise wrinkles the zero level set). Measured on "a green cone", 600 steps.
SDF_OPTIMIZE_DEFAULTS = {"lr_encoding": 3e-3}


class Params(PromptedParams):
    field: SDFConfig = Field(default_factory=SDFConfig)
    optimize: DistillConfig = Field(default_factory=lambda: DistillConfig(**SDF_OPTIMIZE_DEFAULTS))
    guidance: SDSConfig = Field(default_factory=SDSConfig)
    lambda_eikonal: float = Field(10.0, ge=0)
    eikonal_points: int = Field(1024, ge=1)
    mesh_init: MeshInitConfig = Field(default_factory=MeshInitConfig)
    preview_views: int = Field(8, ge=1)
    preview_size: int = Field(64, ge=8)

    _defaults = section_defaults(optimize=SDF_OPTIMIZE_DEFAULTS)


def check(params: Params, inputs: dict[str, Path]) -> None:
    check_prompted(params, inputs)
    if "init_mesh" in inputs:
        require_file(inputs, "init_mesh", "mesh.glb", "pass an extract_mesh or asset dir")


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import torch

    from distill3d.fields.sdf import SDFField
    from distill3d.fields.sdf_init import fit_sdf_to_mesh
    from distill3d.mesh.gltf import load_glb
    from distill3d.optimize.loop import distill
    from distill3d.optimize.scene import volume_scene

    prior = load_stage_prior(params, inputs["prior"])
    field = SDFField(params.field).to(params.device)
    extra: dict = {}
    if "init_mesh" in inputs:
        init = fit_sdf_to_mesh(field, load_glb(Path(inputs["init_mesh"]) / "mesh.glb"), params.mesh_init,
                               seed=params.seed)
        extra["mesh_init_abs_error"] = init["final_abs_error"]
    cfg = params.optimize.model_copy(update={"extra_lambdas": {**params.optimize.extra_lambdas,
                                                               "eikonal": params.lambda_eikonal}})

    def eikonal(f: SDFField, _out: dict, gen: torch.Generator) -> dict:
        return {"loss_eikonal": f.eikonal_loss(params.eikonal_points, gen)} if params.lambda_eikonal > 0 else {}

    scene = volume_scene(field, cfg, params.device, regularizers=eikonal)
    history = distill([scene], prior, params.prompt, cfg, seed=params.seed, device=params.device,
                      work_dir=work_dir(NAME, params, inputs), guidance=params.guidance)
    summary = save_field_outputs([field], history, out, params.preview_views, params.preview_size)
    return {**extra, **summary, "beta": float(field.beta.detach())}
