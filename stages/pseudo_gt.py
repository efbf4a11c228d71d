"""Stage `pseudo_gt`: the prior refines the canonical views into pseudo ground truth by img2img (TextMesh Sec. 3.3):
noise to `refine.strength`, DDIM-denoise with CFG and the prompt with view phrases, keep the original background
outside the masks; a depth-conditioned prior (SD 2 depth) also reads the views' depth. See
distill3d.texture.pseudo_gt for the layout choice (per view at the toy prior's 32x32, or the
2x2 tile as in the paper with `refine.layout=tiled`).

Inputs `canonical` (render_canonical_views) and `prior`; optional `depth_prior`: a depth-conditioned diffusers
folder (Stable Diffusion 2 depth) that refines the views instead of `prior`, reading their depth as TextMesh does
(`distill3d generate --method textmesh --depth-prior DIR`). Output: `pseudo_gt.safetensors` (pseudo_gt, refined:
(4, H, W, 3), keep: (4, H, W)), `pseudo_gt.png` (2x2 tiles: input | refined | pseudo ground truth).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from distill3d.texture.pseudo_gt import PseudoGTConfig
from stages.core.protocol import StageError, require_file
from stages.shared.prompted import PromptedParams, check_prompted, load_stage_prior

NAME = "pseudo_gt"
INPUTS = ("canonical", "prior")
OPTIONAL_INPUTS = ("depth_prior",)


class Params(PromptedParams):
    refine: PseudoGTConfig = Field(default_factory=PseudoGTConfig)


def check(params: Params, inputs: dict[str, Path]) -> None:
    check_prompted(params, inputs)
    if "depth_prior" in inputs and not Path(inputs["depth_prior"]).is_dir():
        raise StageError(f"depth_prior {inputs['depth_prior']} not found: pass a local diffusers folder of "
                         "Stable Diffusion 2 depth (unet/ vae/ text_encoder/ tokenizer/ scheduler/)")
    require_file(inputs, "canonical", "views.safetensors", "pass a render_canonical_views output")


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    from distill3d.texture.canonical import tile_2x2
    from distill3d.texture.pseudo_gt import pseudo_ground_truth
    from distill3d.viz.grid import save_grid

    prior = load_stage_prior(params, inputs.get("depth_prior", inputs["prior"]))
    if "depth_prior" in inputs and not prior.depth_conditioned:
        raise StageError(f"depth_prior {inputs['depth_prior']} is not depth-conditioned (its denoiser reads no "
                         "depth): pass a Stable Diffusion 2 depth folder, or leave it out to refine with the prior")
    views = load_file(str(Path(inputs["canonical"]) / "views.safetensors"))
    gen = torch.Generator().manual_seed(params.seed)
    res = pseudo_ground_truth(prior, views["rgb"].to(params.device), views["mask"].to(params.device), params.prompt,
                              params.refine, generator=gen, depth=views["depth"].to(params.device))
    res = {k: v.cpu().contiguous() for k, v in res.items()}
    save_file(res, str(out / "pseudo_gt.safetensors"))
    save_grid(torch.stack([tile_2x2(views["rgb"]), tile_2x2(res["refined"]), tile_2x2(res["pseudo_gt"])]),
              out / "pseudo_gt.png", ncols=3)
    inside = res["keep"]
    change = float((res["pseudo_gt"] - views["rgb"]).abs()[inside].mean()) if inside.any() else 0.0
    return {"mean_abs_change_inside": change, "kept_fraction": float(inside.float().mean()),
            "depth_conditioned": bool(prior.depth_conditioned)}
