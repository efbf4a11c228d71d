"""End-to-end Magic3D at a small step count: `distill3d generate --method magic3d` with the real toy prior for the
coarse stage and a higher-resolution latent prior for the refine stage (here a tiny random Stable Diffusion of the
real classes: the quality of the refine is measured in benchmarks/, not here). The coarse stage is DreamFusion's
own: a DreamFusion run of the same prompt reuses it; a level that leaves no surface is a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import TINY_ASSET_TAIL, TINY_MESH_TAIL

REPO = Path(__file__).resolve().parents[1]
PRIOR = REPO / "models" / "toy_prior"
PROMPT = "a yellow sphere"
TINY = """
nerf_sds:
  optimize: {steps: 80, n_samples: 32, checkpoint_every: 1000, background: random}  # as the prior is trained
  preview_views: 2
  preview_size: 16
dmtet_refine:
  init: {resolution: 16, sample_resolution: 32, match_views: 2, match_size: 32}
  optimize: {steps: 3, render_size: 32, checkpoint_every: 1000}
  preview_views: 2
  preview_size: 16
""" + TINY_MESH_TAIL + TINY_ASSET_TAIL


def generate(tmp_path: Path, method: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISTILL3D_HOME": str(tmp_path / "home"), "DISTILL3D_PARAMS": str(tmp_path / "params.yaml"),
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "flows.cli", "generate", "--method", method, "--prompt", PROMPT,
                           "--prior", str(PRIOR), *args], cwd=tmp_path, env=env, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.skipif(not (PRIOR / "prior.json").is_file(), reason=f"no toy prior at {PRIOR}")
def test_magic3d_end_to_end(tmp_path) -> None:
    from tiny_models import build_tiny_sd

    (tmp_path / "params.yaml").write_text(TINY)
    fine = build_tiny_sd(tmp_path / "fine_sd")
    r = generate(tmp_path, "magic3d", "--fine-prior", str(fine), "--out", "asset")
    assert r.returncode == 0, r.stderr[-3000:]
    manifest = json.loads((tmp_path / "asset" / "manifest.json").read_text())
    out = {name: info["out"] for name, info in manifest["stages"].items()}
    assert list(out) == ["nerf_sds", "dmtet_refine", "bake_texture", "export_asset", "evaluate"]
    refined = Path(out["dmtet_refine"])
    assert (refined / "mesh.glb").is_file() and (refined / "field.json").is_file()
    init = json.loads((refined / "init.json").read_text())
    assert init["level"] > 0  # the automatic level
    import trimesh

    mesh = trimesh.load(tmp_path / "asset" / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 100 and mesh.visual.kind == "texture"
    metrics = json.loads((tmp_path / "asset" / "metrics.json").read_text())
    assert metrics["colour_name"] == "yellow" and metrics["iou_mean"] > 0.3

    # DreamFusion with the same prompt, seed and params: its coarse field is Magic3D's, from the store
    r = generate(tmp_path, "dreamfusion", "--out", "df")
    assert r.returncode == 0, r.stderr[-3000:]
    df = json.loads((tmp_path / "df" / "manifest.json").read_text())["stages"]
    assert df["nerf_sds"]["out"] == out["nerf_sds"]

    # a level with no surface: one line naming the override, nothing written
    r = generate(tmp_path, "magic3d", "--fine-prior", str(fine), "--set", "dmtet_refine.init.level=100000",
                 "--out", "empty")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and lines[-1].startswith("error: ") and "dmtet_refine.init.level" in lines[-1], r.stderr
    assert not (tmp_path / "empty").exists()
