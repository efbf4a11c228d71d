"""TextMesh (Tsalicoglou et al., 2023) as a Prefect flow of cached stages, sharing DreamFusion's where they agree.

    given a frozen text-to-image diffusion prior and a prompt y:
      1. sdf_nerf:               optimise an SDF field (VolSDF density, eikonal loss, sphere init) with SDS
      2. extract_mesh:           marching cubes at the SDF's zero level                         (shared)
      3. render_canonical_views: the textured mesh from front / right / back / left, masks, depth, 2x2 tile
      4. pseudo_gt:              img2img of the canonical views by the prior, background kept outside the masks
      5. texture_finetune:       mesh fixed; texture <- MSE to the pseudo-GT + lambda_sds * SDS in random views
      6. export_asset:           GLB with the fine-tuned texture, turntable, views                 (shared)
      7. evaluate:               (toy prompts) metrics of the asset, and of its texture before step 5  (shared)

`init` seeds the chain with existing artifacts (`flows.init.init_artifacts`, e.g. from a DreamFusion run):
{"mesh": dir, "nerf": dir} skips steps 1-2 and refines that geometry's texture; {"init_mesh": dir} starts the SDF
from that mesh (pysdf) instead of a sphere; {"depth_prior": dir} has a depth-conditioned model (SD 2 depth) make
the pseudo ground truth in step 4, as in the paper. Stage keys are content keys, so stages shared with a
DreamFusion run of the same prompt and inputs come from the store. The CLI's fast path (flows/plan.py) wires the same artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tasks  # noqa: F401  (sets Prefect's environment before prefect is imported)
from flows.dreamfusion import _Stages
from flows.plan import check_overrides, default_params_file, is_toy_prompt
from prefect import flow
from tasks.artifacts import publish_outputs


@flow(name="textmesh")
def textmesh(
    prompt: str,
    prior: str = "models/toy_prior",
    params: dict | None = None,
    seed: int = 0,
    device: str = "cpu",
    params_file: str | None = None,
    retries: int = 0,
    init: dict[str, str] | None = None,
) -> dict[str, str]:
    """Text -> textured mesh: SDF geometry, texture refined against pseudo ground truth. Returns {stage: dir}."""
    check_overrides("textmesh", params)
    pfile = Path(params_file) if params_file else default_params_file()
    stage = _Stages({"prompt": prompt, "seed": seed, "device": device}, params, pfile, retries)
    init = dict(init or {})
    outputs: dict[str, Any] = {}

    nerf, mesh = init.get("nerf"), init.get("mesh")
    if mesh is None:  # geometry: SDF by score distillation, then its zero level set
        if nerf is None:
            nerf = outputs["sdf_nerf"] = stage("sdf_nerf", prior=prior, init_mesh=init.get("init_mesh"))
        mesh = outputs["extract_mesh"] = stage("extract_mesh", nerf=nerf)
    canonical = outputs["render_canonical_views"] = stage("render_canonical_views", mesh=mesh, nerf=nerf)
    pseudo = outputs["pseudo_gt"] = stage("pseudo_gt", canonical=canonical, prior=prior,
                                          depth_prior=init.get("depth_prior"))
    tuned = outputs["texture_finetune"] = stage("texture_finetune", canonical=canonical, pseudo_gt=pseudo,
                                                prior=prior)
    asset = outputs["export_asset"] = stage("export_asset", mesh=tuned)  # carries the mesh before step 5
    if is_toy_prompt(prompt):
        outputs["evaluate"] = stage("evaluate", asset=asset)

    publish_outputs(f"textmesh: {prompt}", outputs, image=Path(asset) / "views.png", key=f"textmesh-{prompt}")
    return outputs
