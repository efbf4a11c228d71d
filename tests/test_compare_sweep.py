"""`distill3d compare` and `distill3d sweep` end to end with the real toy prior at tiny settings, one DISTILL3D_HOME
for the module (the sweep's w=10 point is the comparison's red cube: a cache hit), the compare report opened in
headless Chromium, and the DVC report stage (stages/report.py) on the comparison's assets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest
import yaml
from PIL import Image

from browser import dump_dom

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--steps", "60", "--set", "extract_mesh.resolution=48", "--set", "bake_texture.texture_size=64",
    "--set", "export_asset.turntable_frames=4", "--set", "export_asset.turntable_size=48",
    "--set", "export_asset.views_size=48", "--set", "evaluate.size=48",
]
PROMPTS = ("a red cube", "a blue sphere", "a green torus")


def run(home: Path, *args: str, module: str = "flows.cli") -> subprocess.CompletedProcess:
    env = {**os.environ, "DISTILL3D_HOME": str(home), "PREFECT_HOME": str(home / "prefect"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compare_home")


@pytest.fixture(scope="module")
def compared(home: Path, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("compare")
    (work / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    proc = run(home, "compare", "--methods", "dreamfusion", "--prompts", str(work / "prompts.txt"),
               "--out", str(work / "report"), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "report"


def _body_attr(dom: str, name: str) -> str:
    match = re.search(rf'<body[^>]*\s{name}="([^"]*)"', dom)
    assert match, f"body has no {name} attribute: the page's load check did not run"
    return unescape(match.group(1))


def test_compare_writes_the_report(compared: Path) -> None:
    for name in ("index.html", "report.md", "metrics.json"):
        assert (compared / name).is_file(), name
    saved = json.loads((compared / "metrics.json").read_text())
    assert [e["prompt"] for e in saved] == list(PROMPTS) and {e["method"] for e in saved} == {"dreamfusion"}
    assert all(isinstance(e["metrics"]["iou_mean"], float) for e in saved)
    md = (compared / "report.md").read_text()
    assert all(f"## {p}" in md for p in PROMPTS) and md.count("| dreamfusion (seed 0) |") == 3


def test_compare_report_loads_in_chromium(compared: Path) -> None:
    page = compared / "index.html"
    dom = dump_dom(page)
    assert json.loads(_body_attr(dom, "data-images-broken")) == []
    assert int(_body_attr(dom, "data-images-total")) == page.read_text().count("<img ") == 2 * len(PROMPTS)
    assert len(re.findall(r'<table class="metrics"', dom)) == len(PROMPTS) and "<th>IoU all views</th>" in dom


def test_compare_again_is_all_cached(compared: Path, home: Path) -> None:
    proc = run(home, "compare", "--methods", "dreamfusion", "--prompts", str(compared.parent / "prompts.txt"),
               "--out", str(compared), *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [e["status"] for e in json.loads((compared / "summary.json").read_text())] == ["cached"] * 3


def test_sweep_writes_grid_plot_and_saturation(compared: Path, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    default = float(yaml.safe_load((REPO / "params.yaml").read_text())["nerf_sds"]["guidance"]["guidance_scale"])
    other = 30.0 if default != 30.0 else 50.0
    proc = run(home, "sweep", "--prompt", "a red cube", "--guidance-scales", f"{default},{other}", "--seeds", "0",
               "--out", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("sweep_grid.png", "sweep_plot.png"):
        assert Image.open(out / name).format == "PNG"
    sweep = json.loads((out / "sweep.json").read_text())
    assert [s["guidance_scale"] for s in sweep["by_scale"]] == sorted([default, other])
    assert len(sweep["saturation"]) == 2 and all(isinstance(v, float) for v in sweep["saturation"])
    assert isinstance(sweep["saturation_monotonic_increasing"], bool)
    statuses = {p["guidance_scale"]: p["status"] for p in sweep["points"]}
    assert statuses == {default: "cached", other: "ok"}  # the default scale: the comparison's red cube
    assert "sweep_grid.png" in (out / "index.html").read_text()


def test_dvc_report_stage(compared: Path, home: Path, tmp_path: Path) -> None:
    assets, metrics = tmp_path / "assets", tmp_path / "metrics"
    metrics.mkdir()
    for run_dir in sorted(d for d in (compared / "runs").iterdir() if d.is_dir() and not d.name.startswith(".")):
        name = run_dir.name.removesuffix("-dreamfusion-s0")
        (metrics / f"{name}.json").write_bytes((run_dir / "metrics.json").read_bytes())
        (assets / name).mkdir(parents=True)
        for f in ("turntable.gif", "views.png", "mesh.glb"):
            (assets / name / f).write_bytes((run_dir / f).read_bytes())
    base = ["report", "--params", "params.yaml", "--in", f"assets={assets}", "--in", f"metrics={metrics}"]
    proc = run(home, *base, "--out", str(tmp_path / "report"), module="stages")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "report" / "index.html").is_file() and (tmp_path / "report" / "report.md").is_file()
    proc = run(home, *base, "--out", str(tmp_path / "summary.json"), module="stages")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["count"] == 3 and isinstance(summary["mean"]["iou_all_views"], float)
    assert isinstance(summary["mean"]["volume_iou"], float)
