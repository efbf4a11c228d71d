"""Stage `vsd_texture`: ProlificDreamer's third stage (Wang et al. 2023, Sec. 4.2): the mesh's geometry fixed, its
texture (the colour network on the surface) optimised by Variational Score Distillation (`guidance`, kind "vsd"
by default), every particle against the one shared camera-conditioned LoRA.

Input `mesh`: a DMTet scene (dmtet_refine's output: `dmtet.json` + weights; a particle set holds one per particle)
and `prior`. Output, per particle (a particle set as its input): `mesh.glb` (the fixed surface), the trained colour
field (`field.json` + `field.safetensors`: what bake_texture bakes), `dmtet.json` + `dmtet.safetensors`,
`views.png`; `history.json` (the joint run) at the top.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from distill3d.guidance.choice import GuidanceConfig
from distill3d.guidance.vsd import VSDConfig
from distill3d.optimize.config import DistillConfig
from stages.core.protocol import require_file
from stages.core.store import work_dir
from stages.shared.defaults import section_defaults
from stages.shared.prompted import PromptedParams, check_prompted, load_stage_prior

NAME = "vsd_texture"
INPUTS = ("mesh", "prior")

# Texture only: albedo and Lambertian renders at the prior's resolution; the colour network at the field's rates.
TEXTURE_OPTIMIZE = {"steps": 300, "albedo_only_fraction": 0.0, "shading_probs": {"albedo": 0.7, "lambertian": 0.3},
                    "extra_lambdas": {"normal_consistency": 0.0, "laplacian": 0.0}}


class Params(PromptedParams):
    optimize: DistillConfig = Field(default_factory=lambda: DistillConfig(**TEXTURE_OPTIMIZE))
    guidance: GuidanceConfig = Field(default_factory=VSDConfig)
    preview_views: int = Field(8, ge=1)
    preview_size: int = Field(64, ge=8)

    _defaults = section_defaults(optimize=TEXTURE_OPTIMIZE, guidance={"kind": "vsd"})


def check(params: Params, inputs: dict[str, Path]) -> None:
    check_prompted(params, inputs)
    require_file(inputs, "mesh", "dmtet.json", "pass a DMTet scene: the output of dmtet_refine")


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import json

    import torch

    from distill3d.cameras import ring_cameras
    from distill3d.guidance.choice import guidance_for
    from distill3d.mesh.dmtet import DMTetScene
    from distill3d.mesh.gltf import save_glb
    from distill3d.optimize.loop import distill
    from distill3d.viz.grid import save_grid
    from stages.shared.particles import PARTICLES, mirror_first, particle_dirs

    prior = load_stage_prior(params, inputs["prior"])
    sources = particle_dirs(inputs["mesh"]) or [Path(inputs["mesh"])]
    scenes = [DMTetScene.load(src) for src in sources]
    for scene in scenes:  # geometry fixed: only the colour network learns
        scene.sdf.requires_grad_(False)
        scene.deform.requires_grad_(False)
    with guidance_for(params.guidance, prior) as guidance:
        history = distill(scenes, prior, params.prompt, params.optimize, seed=params.seed, device=params.device,
                          work_dir=work_dir(NAME, params, inputs), guidance=guidance)
    cams = ring_cameras(params.preview_views)
    rows = []
    for i, scene in enumerate(scenes):
        scene = scene.cpu().eval()
        target = out if len(scenes) == 1 else out / PARTICLES / str(i)
        target.mkdir(parents=True, exist_ok=True)
        save_glb(scene.export_mesh(), target / "mesh.glb")
        scene.field.save(target)
        scene.save(target)
        with torch.no_grad():
            rows.append(torch.cat([scene.render(cams, params.preview_size, shading=s)["rgb"]
                                   for s in ("albedo", "lambertian")]))
        save_grid(rows[-1], target / "views.png", ncols=params.preview_views)
    if len(scenes) > 1:
        mirror_first(out)
    (out / "history.json").write_text(json.dumps(history))
    save_grid(torch.cat(rows), out / "views.png", ncols=params.preview_views)
    last = {k: sum(v[-50:]) / max(1, len(v[-50:])) for k, v in history["losses"].items()}
    return {"seconds": history["seconds"], "steps": history["steps"], "final_losses": last, "particles": len(scenes)}
