"""Stage `evaluate`: score an asset against the toy world's ground truth (writes `metrics.json`).

Silhouette IoU, CIELAB colour error, depth error, Chamfer distance, Janus rate, saturation excess, stripe
sharpness and (with a local CLIP folder) CLIP R-precision; see distill3d.metrics.suite.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from stages.core.protocol import MESH_BEFORE, StageError, StageParams

NAME = "evaluate"
INPUTS = ("asset",)
# An asset holding `mesh_before.glb` (the textured mesh before texture fine-tuning, TextMesh) is scored twice: the
# before scores go into metrics["before"], and metrics["texture_improvement"] = before - after colour error.
BEFORE_KEYS = ("iou_mean", "colour_error_lab", "colour_correct")


class Params(StageParams):
    prompt: str = ""
    size: int = Field(128, ge=16)
    n_ring: int = Field(8, ge=1)
    elevation: float = 15.0
    clip_model: str | None = None


def check(params: Params, inputs: dict[str, Path]) -> None:
    from distill3d.toyworld.vocab import PromptError, parse_prompt

    try:
        parse_prompt(params.prompt)
    except PromptError as exc:
        raise StageError(f"evaluate needs a toy-world prompt: {exc}") from None


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    import json

    from distill3d.metrics.suite import evaluate_asset, load_asset

    metrics = evaluate_asset(load_asset(inputs["asset"]), params.prompt, size=params.size, n_ring=params.n_ring,
                             elevation=params.elevation, clip_model=params.clip_model)
    before_mesh = Path(inputs["asset"]) / MESH_BEFORE
    if before_mesh.is_file():
        before = evaluate_asset(load_asset(before_mesh), params.prompt, size=params.size, n_ring=params.n_ring,
                                elevation=params.elevation, clip_model=None)
        metrics["before"] = {k: before[k] for k in BEFORE_KEYS}
        after_err, before_err = metrics["colour_error_lab"], before["colour_error_lab"]
        metrics["texture_improvement"] = (None if after_err is None or before_err is None
                                          else before_err - after_err)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    keys = ("iou_mean", "colour_error_lab", "colour_correct", "chamfer", "before", "texture_improvement")
    return {k: metrics[k] for k in keys if k in metrics}
