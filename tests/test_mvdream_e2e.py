"""End-to-end MVDream at a small step count through the planner: a tiny 4-view prior (the real multi-view classes,
random weights) drives multi-view SDS over orbits of 4 cameras; the chain meshes, bakes, exports and scores the
field like DreamFusion's. Quality (the Janus claim) is benchmarked, not tested here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import TINY_ASSET_TAIL, TINY_MESH_TAIL

from flows.plan import plan, resolve_chain
from stages.core.execute import execute

PROMPT = "a red sphere with a face"
TINY = """
mv_nerf:
  field: {blob_density: 5.0}
  optimize: {steps: 8, views_per_step: 4, camera_sampler: orbit, view_dependent_prompts: false, n_samples: 24,
             checkpoint_every: 1000}
  guidance: {kind: multiview, guidance_scale: 5.0}
  preview_views: 2
  preview_size: 16
""" + TINY_MESH_TAIL + TINY_ASSET_TAIL


@pytest.mark.slow
def test_mvdream_end_to_end(tmp_path, monkeypatch) -> None:
    from distill3d.priors.multiview import MultiViewArchitecture, MultiViewToyPrior

    monkeypatch.setenv("DISTILL3D_HOME", str(tmp_path / "home"))
    (tmp_path / "params.yaml").write_text(TINY)
    torch.manual_seed(0)
    MultiViewToyPrior.build(MultiViewArchitecture(resolution=16, block_out_channels=(16, 32),
                                                  cross_attention_levels=(False, True), text_width=16,
                                                  text_layers=1)).save(tmp_path / "mv_prior")
    seen: list = []
    import distill3d.priors.multiview as mv

    original = mv.MultiViewToyPrior.predict_noise

    def spy(self, x_t, t, text, cond=None):
        seen.append((x_t.shape[0], cond.cameras.azimuth.clone()))
        return original(self, x_t, t, text, cond)

    monkeypatch.setattr(mv.MultiViewToyPrior, "predict_noise", spy)
    chain = resolve_chain("mvdream", PROMPT, inputs={"prior": tmp_path / "mv_prior"},
                          params_file=tmp_path / "params.yaml")
    while not (planned := plan(chain)).complete:
        step = next(s for s in planned.steps if not s.complete)
        execute(step.link.module, step.link.params, step.inputs, step.out)
    out = planned.outputs
    assert list(out) == ["mv_nerf", "extract_mesh", "bake_texture", "export_asset", "evaluate"]
    batch, az = seen[0]  # the CFG batch: 2 x one group of 4 views, 90 degrees apart
    assert batch == 8 and torch.allclose((az[1:4] - az[:3]) % 360, torch.full((3,), 90.0), atol=1e-3)
    metrics = json.loads((Path(out["evaluate"]) / "metrics.json").read_text())
    assert "janus" in metrics and metrics["janus"]["applicable"] is True
