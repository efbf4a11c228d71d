"""Stage `dmtet_refine`: a coarse field refined into a textured mesh by score distillation through a differentiable
rasteriser (Magic3D, Lin et al. 2023, Sec. 4.2; DMTet, Shen et al. 2021).

A tetrahedral grid is placed in the coarse field's tight bounding box plus a margin; its per-vertex SDF starts at
the field's density surface (automatic level unless `init.level` is set), its per-vertex deformation at 0 (bounded:
tanh times a fraction of a cell), and the coarse field's colour network is inherited. SDF, deformation and colour
are optimised together by SDS (`guidance`) from the `prior` (the fine, higher-resolution prior: 64x64 latent prior or Stable
Diffusion; t in [0.02, 0.5], Magic3D's refine range) on rasterised renders (`render_size`), with the mesh
regularisers (normal consistency, Laplacian) weighted by `optimize.extra_lambdas`. Checkpoints and resume as
nerf_sds. Shading "normal" only (with `optimize.shading_probs: {normal: 1}`) optimises the geometry alone, from
its normal maps (ProlificDreamer's geometry stage).

Output: `mesh.glb` (the refined surface, untextured), the colour field (`field.json` + `field.safetensors`: what
bake_texture bakes into the mesh's atlas), `dmtet.json` + `dmtet.safetensors` (the whole scene, for a later stage),
`history.json`, `views.png` (albedo and shaded rows) and `init.json` (the initial level, box and face count).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from distill3d.guidance.choice import GuidanceConfig
from distill3d.guidance.sds import SDSConfig
from distill3d.optimize.config import DistillConfig
from stages.core.protocol import StageError, require_file
from stages.core.store import work_dir
from stages.shared.defaults import section_defaults
from stages.shared.prompted import PromptedParams, check_prompted, load_stage_prior
from stages.shared.particles import map_particles

NAME = "dmtet_refine"
INPUTS = ("nerf", "prior")


class InitParams(BaseModel):
    """The grid and its initial surface (distill3d.mesh.dmtet_init.DMTetInit)."""

    model_config = ConfigDict(extra="forbid")

    resolution: int = Field(32, ge=4, le=256)
    margin: float = Field(0.1, ge=0.0, le=1.0)
    level: float | str = Field("auto", description="density iso-level of the initial surface, or 'auto'")
    candidate_levels: list[float] = Field(default_factory=lambda: [2.0, 5.0, 10.0, 20.0, 40.0])
    sample_resolution: int = Field(64, ge=16, le=256)  # density grid for the level choice and the tight box
    match_views: int = Field(8, ge=1)  # "auto": ring views whose silhouettes the level's mesh must match
    match_size: int = Field(64, ge=16)
    deform_fraction: float = Field(0.25, gt=0.0, le=1.0)


# Magic3D's refine settings (threestudio's magic3d-refine configs, adapted to a 64x64 prior on CPU): SDS at t in
# [0.02, 0.5], SDF / deformation / colour at 1e-2 / 1e-2 / the field's rates, normal consistency on.
REFINE_OPTIMIZE = {"steps": 300, "render_size": 64, "albedo_only_fraction": 0.0,
                   "shading_probs": {"albedo": 0.5, "lambertian": 0.5}, "lr_groups": {"sdf": 1e-2, "deform": 1e-2},
                   "extra_lambdas": {"normal_consistency": 1.0, "laplacian": 0.0}}
REFINE_GUIDANCE = {"t_min": 0.02, "t_max": 0.5, "guidance_scale": 10.0}


class Params(PromptedParams):
    init: InitParams = Field(default_factory=InitParams)
    optimize: DistillConfig = Field(default_factory=lambda: DistillConfig(**REFINE_OPTIMIZE))
    guidance: GuidanceConfig = Field(default_factory=lambda: SDSConfig(**REFINE_GUIDANCE))
    preview_views: int = Field(8, ge=1)
    preview_size: int = Field(64, ge=8)

    _defaults = section_defaults(optimize=REFINE_OPTIMIZE, guidance=REFINE_GUIDANCE)


def check(params: Params, inputs: dict[str, Path]) -> None:
    check_prompted(params, inputs)
    require_file(inputs, "nerf", "field.json", "pass a field: the output of nerf_sds")
    if isinstance(params.init.level, str) and params.init.level != "auto":
        raise StageError(f"invalid param dmtet_refine.init.level: a number or 'auto', not {params.init.level!r}")


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    return map_particles(_run_one, params, inputs, out)  # a particle set: each particle (ProlificDreamer)


def _run_one(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import json

    import torch

    from distill3d.cameras import ring_cameras
    from distill3d.fields.loading import load_field
    from distill3d.guidance.choice import guidance_for
    from distill3d.mesh.dmtet import DMTetInit, DMTetScene, EmptySurfaceError
    from distill3d.mesh.gltf import save_glb
    from distill3d.optimize.loop import distill
    from distill3d.viz.grid import save_grid

    prior = load_stage_prior(params, inputs["prior"])
    coarse = load_field(inputs["nerf"])
    cfg = params.init
    init = DMTetInit(resolution=cfg.resolution, margin=cfg.margin, level=cfg.level,
                     candidate_levels=list(cfg.candidate_levels), sample_resolution=cfg.sample_resolution,
                     match_views=cfg.match_views, match_size=cfg.match_size)
    try:
        scene = DMTetScene.from_field(coarse, init, deform_fraction=cfg.deform_fraction)
        with guidance_for(params.guidance, prior) as guidance:
            history = distill([scene], prior, params.prompt, params.optimize, seed=params.seed,
                              device=params.device, work_dir=work_dir(NAME, params, inputs), guidance=guidance)
    except EmptySurfaceError as exc:
        raise StageError(f"{exc}; set dmtet_refine.init.level (e.g. --set dmtet_refine.init.level=5)") from None
    scene = scene.cpu().eval()
    mesh = scene.export_mesh()
    save_glb(mesh, out / "mesh.glb")
    scene.field.save(out)  # the colour network: bake_texture bakes it into the mesh's atlas
    scene.save(out)
    (out / "history.json").write_text(json.dumps(history))
    (out / "init.json").write_text(json.dumps(scene.init_info, indent=2, default=str))
    cams = ring_cameras(params.preview_views)
    with torch.no_grad():
        rows = [scene.render(cams, params.preview_size, shading=s)["rgb"] for s in ("albedo", "lambertian")]
    save_grid(torch.cat(rows), out / "views.png", ncols=params.preview_views)
    last = {k: sum(v[-50:]) / max(1, len(v[-50:])) for k, v in history["losses"].items()}
    return {"seconds": history["seconds"], "steps": history["steps"], "final_losses": last,
            "vertices": int(mesh.vertices.shape[0]), "faces": int(mesh.faces.shape[0]),
            "init_level": scene.init_info.get("level")}
