"""Stage `evaluate`: score an asset against the toy world's ground truth (writes `metrics.json`).

Silhouette IoU (all views, and the ring alone), volumetric IoU, CIELAB colour error, depth error, Chamfer distance,
normal error and roughness, Janus rate, saturation excess, stripe sharpness and (with a local CLIP folder) CLIP
R-precision; see distill3d.metrics.suite.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from stages.core.protocol import MESH_BEFORE, StageError, StageParams
from stages.shared.particles import map_particles

NAME = "evaluate"
INPUTS = ("asset",)
# An asset holding `mesh_before.glb` (the textured mesh before texture fine-tuning, TextMesh) is scored twice: the
# before scores go into metrics["before"], and metrics["texture_improvement"] = before - after colour error.
BEFORE_KEYS = ("iou_all_views", "iou_mean", "colour_error_lab", "colour_correct")


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
    """Score the asset; a particle set (ProlificDreamer): each particle, then a summary at the top (particle 0's
    metrics, every particle's headline metrics, their means and the particles' diversity)."""
    extra = map_particles(_run_one, params, inputs, out)
    if "particles" in extra:
        extra = _summarise_particles(inputs["asset"], out, extra)
    return extra


PARTICLE_KEYS = ("iou_mean", "colour_error_lab", "colour_correct")


def _summarise_particles(asset: Path, out: Path, extra: dict) -> dict:
    import json

    from distill3d.metrics.diversity import mean_pairwise_distance
    from distill3d.metrics.suite import load_asset
    from stages.shared.particles import PARTICLES, particle_dirs

    per = [json.loads((out / PARTICLES / str(i) / "metrics.json").read_text()) for i in range(len(extra["particles"]))]
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["particles"] = [{k: m.get(k) for k in PARTICLE_KEYS} for m in per]
    numeric = [k for k in PARTICLE_KEYS if all(isinstance(m.get(k), (int, float)) for m in per)]
    metrics["particle_mean"] = {k: sum(float(m[k]) for m in per) / len(per) for k in numeric}
    metrics["diversity"] = mean_pairwise_distance([load_asset(d) for d in particle_dirs(asset)])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return {**{k: v for k, v in extra.items() if k != "particles"}, "particle_mean": metrics["particle_mean"],
            "diversity": metrics["diversity"]}


def _run_one(params: Params, inputs: dict[str, Path], out: Path) -> dict:
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
    keys = ("iou_all_views", "iou_mean", "colour_error_lab", "colour_correct", "chamfer", "volume", "normals", "before",
            "texture_improvement")
    return {k: metrics[k] for k in keys if k in metrics}
