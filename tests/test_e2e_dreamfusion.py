"""End to end: `distill3d generate --method dreamfusion` with the real toy prior (small step counts), the cached
re-run, bad input, and the exported GLB under the Khronos validator.

Quality at default settings (IoU >= 0.8 on prompts the tests do not use) is measured by
benchmarks/bench_dreamfusion.py; here the run is CI-sized, so the bar is only that an object of the right colour
and roughly the right silhouette comes out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gltf_validator import validate_glb

REPO = Path(__file__).resolve().parents[1]
PRIOR = REPO / "models" / "toy_prior"
SMALL = [
    "--steps", "400",
    "--set", "extract_mesh.resolution=64", "--set", "extract_mesh.match_size=48",
    "--set", "bake_texture.texture_size=128", "--set", "export_asset.turntable_frames=6",
    "--set", "export_asset.turntable_size=64", "--set", "export_asset.views_size=64",
    "--set", "evaluate.size=64",
]


def distill3d(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISTILL3D_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e_home")


@pytest.fixture(scope="module")
def first_run(home: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "purple_sphere"
    proc = distill3d(home, "generate", "--method", "dreamfusion", "--prompt", "a purple sphere", "--out", str(out),
                     *SMALL)
    return proc, out


def test_generate_writes_a_complete_asset(first_run):
    proc, out = first_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("mesh.glb", "turntable.gif", "views.png", "manifest.json", "metrics.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prompt"] == "a purple sphere"
    assert set(manifest["stages"]) >= {"nerf_sds", "extract_mesh", "bake_texture", "export_asset", "evaluate"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["colour_name"] == "purple"
    assert metrics["iou_mean"] > 0.5  # 400 steps only; default settings are benchmarked


def test_exported_glb_passes_the_gltf_validator(first_run):
    _, out = first_run
    report = validate_glb(out / "mesh.glb")
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]


def test_same_command_again_is_all_cache_hits_without_a_flow_run(first_run, home, tmp_path):
    """The repeat takes the fast path: every stage from the store, no Prefect flow run (its database untouched;
    how fast that is lives in benchmarks/bench_dreamfusion.py)."""
    _, first_out = first_run
    out = tmp_path / "again"
    db = home / "prefect" / "prefect.db"
    before = db.stat().st_mtime_ns
    proc = distill3d(home, "generate", "--method", "dreamfusion", "--prompt", "a purple sphere", "--out", str(out),
                     *SMALL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.startswith("cached:")
    assert json.loads((out / "manifest.json").read_text())["cached"] is True
    assert (out / "mesh.glb").read_bytes() == (first_out / "mesh.glb").read_bytes()
    assert db.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--prompt", "a purple dragon"], "dragon"),
        (["--prompt", ""], "empty prompt"),
        (["--prompt", "a red cube", "--guidance-scale", "-5"], "nerf_sds.guidance.guidance_scale"),
        (["--prompt", "a red cube", "--set", "nerf_sds.optimize.steps=-3"], "nerf_sds.optimize.steps"),
        (["--prompt", "a red cube", "--prior", "/nonexistent/prior"], "/nonexistent/prior"),
    ],
)
def test_bad_input_is_one_clear_line_and_no_output(home, tmp_path, args, needle):
    out = tmp_path / "never"
    proc = distill3d(home, "generate", "--out", str(out), *args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not out.exists()
