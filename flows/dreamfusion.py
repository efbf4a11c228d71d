"""DreamFusion (Poole et al., 2022) as a Prefect flow of cached stages.

    given a frozen text-to-image diffusion prior and a prompt y:
      1. nerf_sds:     optimise a NeRF theta so that its renders g(theta, c) from random cameras c score well
                       under the prior: grad = w(t) (eps_hat(x_t; y, t) - eps) dx/dtheta   (score distillation)
      2. extract_mesh: marching cubes on the NeRF's density, keep the largest component
      3. bake_texture: UV-unwrap (xatlas), bake the NeRF's albedo into the texture atlas
      4. export_asset: write mesh.glb + turntable.gif + views.png                                     (shared)
      5. evaluate:     (toy-world prompts only) compare the asset with the toy world's ground truth    (shared)

Each stage is a task whose cache key is the stage key (see tasks/stage_task.py); re-running with the same prompt,
params and prior returns at once. The `distill3d` CLI does not even start this flow when every stage is cached
(flows/plan.py). Deploy with `prefect deploy ./flows/dreamfusion.py:dreamfusion`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tasks  # noqa: F401  (sets Prefect's environment before prefect is imported)
from flows.plan import check_overrides, default_params_file, is_toy_prompt, stage_params
from prefect import flow
from stages.common import StageError, all_inputs, get_stage
from tasks.artifacts import publish_outputs
from tasks.stage_task import stage_task


class _Stages:
    """Run stages by name with params resolved as `flows.plan` does (so the fast path sees the same keys)."""

    def __init__(self, runtime: dict[str, Any], overrides: dict | None, params_file: Path | None, retries: int):
        self.runtime, self.overrides, self.params_file, self.retries = runtime, overrides, params_file, retries

    def __call__(self, name: str, **artifacts: str) -> str:
        module = get_stage(name)
        params = stage_params(name, self.runtime, self.overrides, self.params_file)
        missing = [n for n in module.INPUTS if artifacts.get(n) is None]
        if missing:
            raise StageError(f"stage {name} needs inputs {missing}")
        inputs = {n: str(artifacts[n]) for n in all_inputs(module) if artifacts.get(n) is not None}
        run = stage_task(module, retries=self.retries)
        return run(params=params.model_dump(mode="json"), inputs=inputs)


@flow(name="dreamfusion")
def dreamfusion(
    prompt: str,
    prior: str = "models/toy_prior",
    params: dict | None = None,
    seed: int = 0,
    device: str = "cpu",
    params_file: str | None = None,
    retries: int = 0,
) -> dict[str, str]:
    """Text -> textured 3D asset by score distillation. Returns {stage: output dir}.

    `params` overrides params.yaml per stage: {"nerf_sds": {"guidance.guidance_scale": 50}, ...}.
    """
    check_overrides("dreamfusion", params)
    pfile = Path(params_file) if params_file else default_params_file()
    stage = _Stages({"prompt": prompt, "seed": seed, "device": device}, params, pfile, retries)

    nerf = stage("nerf_sds", prior=prior)
    mesh = stage("extract_mesh", nerf=nerf)
    textured = stage("bake_texture", mesh=mesh, nerf=nerf)
    asset = stage("export_asset", mesh=textured)
    outputs = {"nerf_sds": nerf, "extract_mesh": mesh, "bake_texture": textured, "export_asset": asset}
    if is_toy_prompt(prompt):
        outputs["evaluate"] = stage("evaluate", asset=asset)

    publish_outputs(f"dreamfusion: {prompt}", outputs, image=Path(asset) / "views.png", key=f"dreamfusion-{prompt}")
    return outputs
