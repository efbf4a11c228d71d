"""End-to-end ProlificDreamer at a small step count through the planner (no Prefect start-up; the derived flow is
the same for every method, tests/test_tasks_prefect.py and the TextMesh / Magic3D end-to-end tests run flows):
VSD particles -> per-particle DMTet geometry on normal maps -> texture by VSD against one LoRA -> bake -> an asset
per particle -> metrics per particle, their mean and the particles' diversity. A tiny random Stable Diffusion
stands in for the mesh stages' higher-resolution prior (quality is benchmarked, not tested here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import TINY_ASSET_TAIL

from flows.plan import plan, resolve_chain
from stages.core.execute import execute

REPO = Path(__file__).resolve().parents[1]
PRIOR = REPO / "models" / "toy_prior"
PROMPT = "a green sphere"
TINY = """
vsd_nerf:
  particles: 2
  field: {blob_density: 5.0}
  optimize: {steps: 40, n_samples: 32, checkpoint_every: 1000}
  guidance: {kind: vsd, guidance_scale: 7.5}
  preview_views: 2
  preview_size: 16
vsd_geometry:
  init: {resolution: 12, sample_resolution: 32, match_views: 2, match_size: 32}
  optimize: {steps: 2, render_size: 32, shading_probs: {normal: 1.0}, checkpoint_every: 1000}
  preview_views: 2
  preview_size: 16
vsd_texture:
  optimize: {steps: 2, render_size: 32, checkpoint_every: 1000}
  preview_views: 2
  preview_size: 16
bake_texture: {texture_size: 64}
""" + TINY_ASSET_TAIL


@pytest.mark.slow
@pytest.mark.skipif(not (PRIOR / "prior.json").is_file(), reason=f"no toy prior at {PRIOR}")
def test_prolificdreamer_end_to_end(tmp_path, monkeypatch) -> None:
    from tiny_models import build_tiny_sd

    monkeypatch.setenv("DISTILL3D_HOME", str(tmp_path / "home"))
    (tmp_path / "params.yaml").write_text(TINY)
    fine = build_tiny_sd(tmp_path / "fine_sd")
    chain = resolve_chain("prolificdreamer", PROMPT, inputs={"prior": PRIOR, "fine_prior": fine},
                          params_file=tmp_path / "params.yaml")
    while not (planned := plan(chain)).complete:
        step = next(s for s in planned.steps if not s.complete)
        execute(step.link.module, step.link.params, step.inputs, step.out)
    out = planned.outputs
    assert list(out) == ["vsd_nerf", "dmtet_refine", "vsd_texture", "bake_texture", "export_asset", "evaluate"]
    for name in ("vsd_nerf", "dmtet_refine", "vsd_texture", "bake_texture", "export_asset", "evaluate"):
        assert len(list((Path(out[name]) / "particles").iterdir())) == 2, name  # one folder per particle
    from safetensors.torch import load_file

    a, b = (load_file(str(Path(out["vsd_nerf"]) / "particles" / i / "field.safetensors")) for i in "01")
    assert any((a[k] - b[k]).abs().max() > 1e-3 for k in a)  # distinct fields
    nerf = json.loads((Path(out["vsd_nerf"]) / "manifest.json").read_text())
    assert nerf["params"]["guidance"]["kind"] == "vsd" and "loss_vsd" in nerf["extra"]["final_losses"]
    for i in "01":
        assert (Path(out["export_asset"]) / "particles" / i / "mesh.glb").is_file()
    metrics = json.loads((Path(out["evaluate"]) / "metrics.json").read_text())
    assert len(metrics["particles"]) == 2 and metrics["diversity"] is not None and metrics["diversity"] >= 0
    assert set(metrics["particle_mean"]) >= {"iou_mean", "colour_error_lab"}
