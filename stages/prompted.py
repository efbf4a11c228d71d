"""What every prompt-driven stage shares: its run-time params, the cheap prompt check and loading the prior."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from stages.common import StageError, StageParams
from stages.prior_check import check_prompt_for_prior


class PromptedParams(StageParams):
    """Params of a stage that asks a prior about a prompt (the flow fills prompt, seed and device)."""

    prompt: str = Field("", description="text prompt (for the toy prior: words of the toy vocabulary)")
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"


def check_prompted(params: PromptedParams, inputs: dict[str, Path]) -> None:
    check_prompt_for_prior(params.prompt, inputs["prior"])


def check_device(params: PromptedParams) -> None:
    """StageError when CUDA is asked for but absent."""
    import torch

    if params.device == "cuda" and not torch.cuda.is_available():
        raise StageError("device is cuda but no CUDA device is available: use --device cpu")


def load_stage_prior(params: PromptedParams, prior_dir: Path):
    """The prior on the stage's (checked) device; seeds torch with the stage's seed."""
    import torch

    from distill3d.priors.loading import load_prior

    check_device(params)
    torch.manual_seed(params.seed)
    return load_prior(prior_dir, device=params.device)


def save_field_outputs(field, history: dict, out: Path, views: int, size: int) -> dict:
    """Write an optimised field (field.json + weights), history.json and views.png (albedo and Lambertian rows
    over a ring of cameras) into ``out``; return the manifest summary (timings, steps, final losses)."""
    import json

    import torch

    from distill3d.cameras import ring_cameras
    from distill3d.render.volume import render_field
    from distill3d.viz.grid import save_grid

    field.cpu().eval().save(out)
    (out / "history.json").write_text(json.dumps(history))
    cams = ring_cameras(views)
    with torch.no_grad():
        rows = [render_field(field, cams, size, shading=s, stratified=False)["rgb"] for s in ("albedo", "lambertian")]
    save_grid(torch.cat(rows), out / "views.png", ncols=views)
    last = {k: sum(v[-50:]) / max(1, len(v[-50:])) for k, v in history["losses"].items()}
    return {"seconds": history["seconds"], "steps": history["steps"], "final_losses": last}
