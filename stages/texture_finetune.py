"""Stage `texture_finetune`: with the mesh fixed, optimise its UV texture with MSE to the pseudo ground truth in
the canonical views plus `lambda_sds` * SDS in random views (TextMesh Sec. 3.3; see distill3d.texture.finetune).

Inputs: `canonical` (the textured mesh and its canonical cameras), `pseudo_gt`, `prior`. Output: `mesh.glb` with the
fine-tuned texture (a textured "mesh" artifact: export_asset keeps its texture), `mesh_before.glb` (the textured
mesh it started from, carried into the asset so `evaluate` can score the texture before and after), `texture.png`,
`history.json`, `views.png` (canonical views: before | pseudo ground truth | after).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import Field

from distill3d.texture.finetune import TextureFinetuneConfig
from stages.core.protocol import MESH_BEFORE, require_file
from stages.shared.prompted import PromptedParams, check_device, check_prompted, load_stage_prior

NAME = "texture_finetune"
INPUTS = ("canonical", "pseudo_gt", "prior")


class Params(PromptedParams):
    finetune: TextureFinetuneConfig = Field(default_factory=TextureFinetuneConfig)


def check(params: Params, inputs: dict[str, Path]) -> None:
    check_prompted(params, inputs)
    for name, file in (("canonical", "mesh.glb"), ("canonical", "cameras.json"), ("pseudo_gt", "pseudo_gt.safetensors")):
        require_file(inputs, name, file)


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    from distill3d.cameras import spherical_cameras
    from distill3d.mesh.gltf import load_glb, save_glb
    from distill3d.mesh.types import TexturedMesh
    from distill3d.texture.canonical import tile_2x2
    from distill3d.texture.finetune import finetune_texture
    from distill3d.texture.render import FragmentCache, shade_texture
    from distill3d.viz.grid import save_grid

    check_device(params)
    canonical = Path(inputs["canonical"])
    mesh = load_glb(canonical / "mesh.glb")
    cam_info = json.loads((canonical / "cameras.json").read_text())
    cams = spherical_cameras(cam_info["azimuth"], cam_info["elevation"], cam_info["radius"], cam_info["fov"],
                             device=params.device)
    target = load_file(str(Path(inputs["pseudo_gt"]) / "pseudo_gt.safetensors"))["pseudo_gt"].to(params.device)
    prior = load_stage_prior(params, inputs["prior"]) if params.finetune.lambda_sds > 0 else None
    texture, history = finetune_texture(mesh.to(params.device), cams, target, prior, params.prompt, params.finetune,
                                        seed=params.seed)
    texture = texture.cpu()
    tuned = TexturedMesh(vertices=mesh.vertices, faces=mesh.faces, uv=mesh.uv, texture=texture)
    save_glb(tuned, out / "mesh.glb")
    shutil.copyfile(canonical / "mesh.glb", out / MESH_BEFORE)
    save_grid(texture[None], out / "texture.png", ncols=1)
    (out / "history.json").write_text(json.dumps(history))
    with torch.no_grad():
        cache = FragmentCache.build(mesh, cams.to("cpu"), target.shape[1], ssaa=params.finetune.ssaa)
        before = shade_texture(mesh.texture, cache)["rgb"]
        after = shade_texture(texture, cache)["rgb"]
    target = target.cpu()
    save_grid(torch.stack([tile_2x2(before), tile_2x2(target), tile_2x2(after)]), out / "views.png", ncols=3)
    mse = lambda a: float(((a - target) ** 2).mean())  # noqa: E731
    return {"mse_before": mse(before), "mse_after": mse(after), "seconds": history["seconds"],
            "final_losses": {k: sum(v[-20:]) / max(1, len(v[-20:])) for k, v in history["losses"].items()}}
