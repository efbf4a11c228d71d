"""The comparison stage (the project's main result) on a small fake data folder: methods' assets and metrics side by
side, runs read back through the same expansion as dvc.yaml's, the claims judged from the metrics, a method's missing
prompt a row with its reason, and the summary DVC reads."""

from __future__ import annotations

import json
from pathlib import Path

from report_fixtures import fake_asset, fake_metrics
from stages.core.execute import execute
from stages.core.params import load_params
from stages.core.protocol import get_stage


def _write(folder: Path, name: str, prompt: str, metrics: dict | None) -> None:
    asset = fake_asset(folder / "asset" / name, prompt, frames=2, size=16)
    (asset / "mesh.glb").write_bytes(b"glTF")
    if metrics is not None:
        (folder / "metrics").mkdir(parents=True, exist_ok=True)
        (folder / "metrics" / f"{name}.json").write_text(json.dumps({**metrics, "prompt": prompt}))
    (folder / "field" / name).mkdir(parents=True, exist_ok=True)
    (folder / "field" / name / "manifest.json").write_text(json.dumps({"seconds": 12.5, "complete": True}))


def test_comparison_report_claims_and_missing_rows(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DISTILL3D_HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    for method, iou, sat in (("dreamfusion", 0.85, 0.75), ("mvdream", 0.9, 0.62)):
        _write(data / method, "red_cube", "a red cube", fake_metrics(iou, sat))
    _write(data / "mvdream", "white_cone", "a white cone", None)  # its evaluate never ran
    for w, sat in ((5.0, 0.63), (100.0, 0.8)):
        _write(data / "runs" / "sweep", f"w{w:g}-s0", "a red cube", fake_metrics(0.8, sat))
    params_file = tmp_path / "params.yaml"
    params_file.write_text("comparison:\n  title: test\n  runs:\n    sweep: {method: dreamfusion, prompt: red_cube,"
                           " evidence: sds, sweep: {nerf_sds.guidance.guidance_scale: [5, 100]}}\n")
    module = get_stage("comparison")
    out = execute(module, load_params(module, params_file), {"results": data}, tmp_path / "out")
    claims = {c["key"]: c for c in json.loads((out / "claims.json").read_text())}
    assert claims["oversaturation"]["verdict"] == "reproduced"  # excess 0.03 -> 0.2 with guidance
    assert claims["mvdream_first"]["verdict"] == "reproduced"
    assert claims["multiview_janus"]["verdict"] == "no data"
    page = (out / "index.html").read_text()
    assert "Missing results" in page and "white_cone" in page and "Claims of the seed" in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"]["dreamfusion"]["seconds"] == 12.5
    assert [r["point"] for r in summary["runs"]["sweep"]] == ["w5-s0", "w100-s0"]
    flat = json.loads((out / "metrics.json").read_text())
    assert flat["claim.oversaturation"] == "reproduced" and abs(flat["mvdream.iou_all_views"] - 0.9) < 1e-9
    assert (out / "claims.md").read_text().startswith("| claim of the seed |")


def test_a_run_point_that_is_the_methods_own_chain_is_read_from_the_method(tmp_path, monkeypatch) -> None:
    """dvc.yaml makes a run's seed-0 point without overrides once, as the method's own chain (flows/dvc_yaml.py
    `instances`): the comparison reads its metrics there; a seed-1 point from data/runs/<run>/."""
    monkeypatch.setenv("DISTILL3D_HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    _write(data / "mvdream", "face", "an orange sphere with a face", {**fake_metrics(0.9, 0.6), "janus": {"rate": 0.0}})
    _write(data / "runs" / "janus_mv", "s1", "an orange sphere with a face",
           {**fake_metrics(0.8, 0.6), "janus": {"rate": 0.25}})
    params_file = tmp_path / "params.yaml"
    params_file.write_text("comparison:\n  runs:\n    janus_mv: {method: mvdream, prompt: face, seeds: [0, 1], "
                           "evidence: janus_multiview}\n")
    module = get_stage("comparison")
    out = execute(module, load_params(module, params_file), {"results": data}, tmp_path / "out")
    rows = json.loads((out / "summary.json").read_text())["runs"]["janus_mv"]
    assert [(r["point"], r["janus_rate"]) for r in rows] == [("s0", 0.0), ("s1", 0.25)]
    claim = next(c for c in json.loads((out / "claims.json").read_text()) if c["key"] == "multiview_janus")
    assert claim["verdict"] != "no data" and abs(claim["numbers"]["janus_rate"]["mvdream"] - 0.125) < 1e-9


def test_methods_figure_has_a_front_and_a_back_cell_per_method_and_prompt(tmp_path) -> None:
    """methods.png: rows are methods, columns prompt x (front, back); the back cell is the turntable's middle frame;
    a missing asset is a blank cell, not a failure."""
    import numpy as np
    from PIL import Image

    from distill3d.report.side_by_side import methods_figure

    def gif(folder: Path, colours) -> Path:
        folder.mkdir(parents=True)
        frames = [Image.new("RGB", (16, 16), c) for c in colours]
        frames[0].save(folder / "turntable.gif", save_all=True, append_images=frames[1:])
        return folder

    a = gif(tmp_path / "a", [(255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)])  # front red, back (frame 2) blue
    path = methods_figure({"dreamfusion": {"cube": a}, "mvdream": {}}, tmp_path / "methods.png")
    grid = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    colours = {tuple(c) for c in grid}
    assert (255, 0, 0) in colours and (0, 0, 255) in colours and (0, 255, 0) not in colours
    assert methods_figure({"m": {}}, tmp_path / "none.png") is None


def test_sds_seed_diversity_is_the_render_distance_between_the_seeds_assets(tmp_path) -> None:
    """The diversity claim's SDS side: at each guidance scale with several seeds, the mean pairwise render distance
    of their assets (the measure evaluate gives ProlificDreamer's particles): 0 for identical assets, larger when a
    seed drew another shape."""
    from distill3d.mesh.gltf import save_glb
    from distill3d.toyworld.gt_mesh import gt_mesh
    from distill3d.toyworld.vocab import parse_prompt
    from stages.comparison import evidence, seed_diversity

    runs = []
    for w, prompts in ((5.0, ("a red cube", "a red cube")), (100.0, ("a red cube", "a red cone"))):
        for seed, prompt in enumerate(prompts):
            asset = tmp_path / f"w{w:g}-s{seed}"
            save_glb(gt_mesh(parse_prompt(prompt), resolution=32, texture_size=0), asset / "mesh.glb")
            runs.append({"value": w, "seed": seed, "evidence": "sds", "asset": str(asset), "metrics": {}})
    runs.append({"value": 20.0, "seed": 0, "evidence": "sds", "asset": str(tmp_path / "w20-s0"), "metrics": {}})
    data = {"methods": {}, "runs": {"sweep": runs}}
    distances = seed_diversity(data, "sds")
    assert set(distances) == {5.0, 100.0}  # w = 20 has one seed (and no asset)
    assert distances[5.0] < 1e-6 < 0.01 < distances[100.0]
    assert evidence(data).diversity == {"sds": {5.0: [distances[5.0]], 100.0: [distances[100.0]]}}
