"""Batch plumbing without Prefect: prompt sources (text, CSV, folders, per-row errors), rows turned into checked asset
requests (flows/jobs.py), the gallery, and `distill3d batch`'s all-cached fast path (fake stages, ~ms each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fake_stages
from distill3d.report.gallery import write_gallery
from flows.jobs import Defaults, prepare, row_request
from flows.prompts_source import PromptRow, parse_text, read_prompts

REPO = Path(__file__).resolve().parents[1]


def test_text_rows_with_options_and_per_row_errors():
    rows = parse_text(textwrap.dedent("""\
        # comment

        a red cube
        a blue torus | seed=3 method=dreamfusion nerf_sds.optimize.steps=50 export_asset.turntable_frames=4
        a green cone | name="Green One" nerf_sds.camera='{"radius": 2}'
        a cube | seed=abc
        a cube | steps=3
        a cube | seed="unclosed
        """), "p.txt")
    assert [r.source for r in rows] == ["p.txt:3", "p.txt:4", "p.txt:5", "p.txt:6", "p.txt:7", "p.txt:8"]
    assert rows[0] == PromptRow(prompt="a red cube", source="p.txt:3")
    assert (rows[1].seed, rows[1].method) == (3, "dreamfusion")
    assert rows[1].overrides == {"nerf_sds": {"optimize.steps": 50}, "export_asset": {"turntable_frames": 4}}
    assert rows[2].name == "green-one" and rows[2].overrides == {"nerf_sds": {"camera": {"radius": 2}}}
    assert rows[3].error == "seed must be an integer, not 'abc'"
    assert rows[4].error.startswith("unknown option 'steps'")
    assert rows[5].error.startswith("cannot read options")
    assert all(r.error is None for r in rows[:3])


def test_csv_rows_folder_order_and_unique_names(tmp_path):
    (tmp_path / "b.csv").write_text("prompt,seed,nerf_sds.optimize.steps,set\n"
                                    "a red cube,1,30,extract_mesh.resolution=64\n"
                                    ",,,\n"
                                    "a red cube,1,,\n")
    (tmp_path / "a.txt").write_text("a red cube\n")
    (tmp_path / "notes.md").write_text("ignored\n")
    rows = read_prompts(tmp_path)
    assert [r.source for r in rows] == ["a.txt:1", "b.csv:2", "b.csv:4"]
    assert rows[1].overrides == {"nerf_sds": {"optimize.steps": 30}, "extract_mesh": {"resolution": 64}}
    assert [r.name for r in rows] == ["a-red-cube", "a-red-cube-s1", "a-red-cube-s1-2"]
    request = row_request(rows[1], tmp_path / "out", Defaults(params={"nerf_sds": {"optimize.steps": 5,
                                                                                    "preview_size": 32}}))
    assert (request.method, request.seed, request.out) == ("dreamfusion", 1, str(tmp_path / "out" / rows[1].name))
    assert request.params == {"nerf_sds": {"optimize.steps": 30, "preview_size": 32},
                              "extract_mesh": {"resolution": 64}}


def test_steps_shortcut_addresses_each_rows_own_method(tmp_path):
    """`distill3d batch --steps N` sets each row's method's optimisation steps (a textmesh row: sdf_nerf's)."""
    rows = parse_text("a red cube\na red cube | method=textmesh\n", "p.txt")
    defaults = Defaults(steps=7, guidance_scale=3.0)
    df, tm = (row_request(r, tmp_path, defaults) for r in rows)
    assert df.params == {"nerf_sds": {"optimize.steps": 7, "guidance.guidance_scale": 3.0}}
    assert tm.params == {"sdf_nerf": {"optimize.steps": 7, "guidance.guidance_scale": 3.0}}


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "not found"),
    (lambda p: p.write_text("# only comments\n\n"), "has no prompts"),
    (lambda p: p.with_suffix(".csv").write_text("text,seed\nx,1\n"), "needs a 'prompt' column"),
    (lambda p: p.with_suffix(".csv").write_text("prompt,colour\nx,red\n"), "unknown column(s) ['colour']"),
])
def test_unusable_sources_raise_one_line(tmp_path, setup, message):
    from stages.core.protocol import StageError

    path = tmp_path / "p.txt"
    setup(path)
    source = path.with_suffix(".csv") if path.with_suffix(".csv").exists() else path
    with pytest.raises(StageError, match=None) as info:
        read_prompts(source)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL3D_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DISTILL3D_PARAMS", str(tmp_path / "params.yaml"))
    monkeypatch.setenv("FAKE_STAGE_LOG", str(tmp_path / "runs.log"))
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "prior").mkdir()
    (tmp_path / "prior" / "w.bin").write_bytes(b"w")
    fake_stages.register()
    yield tmp_path
    fake_stages.unregister()


def test_prepare_reports_bad_words_params_and_methods_row_by_row(fake_home):
    rows = [PromptRow("a red cube", "x:1", name="ok"), PromptRow("a flying elephant", "x:2", name="words"),
            PromptRow("a red cube", "x:3", overrides={"nerf_sds": {"optimize.stepz": 1}}, name="param"),
            PromptRow("a red cube", "x:4", method="nosuchmethod", name="method")]
    entries, pending = prepare(rows, fake_home / "out", Defaults(inputs={"prior": str(fake_home / "prior")}))
    status = {e["name"]: (e["status"], e["reason"]) for e in entries}
    assert status["ok"] == ("pending", None) and [e["name"] for e in pending] == ["ok"]
    assert status["words"][0] == "failed" and "flying" in status["words"][1]
    assert status["param"][1].startswith("invalid param nerf_sds.optimize.stepz")
    assert status["method"][1].startswith("unknown method 'nosuchmethod'")
    assert not (fake_home / "out").exists()  # nothing was written for rows that did not run


def test_gallery_lists_assets_and_failures_offline(tmp_path):
    (tmp_path / "a-red-cube").mkdir()
    for f in ("mesh.glb", "turntable.gif", "views.png"):
        (tmp_path / "a-red-cube" / f).write_bytes(b"x")
    (tmp_path / "a-red-cube" / "metrics.json").write_text(json.dumps(
        {"iou_all_views": 0.91, "iou_mean": 0.91, "volume": {"iou": 0.55}, "chamfer": {"chamfer": 0.1}}))
    entries = [
        {"name": "a-red-cube", "prompt": "a red cube", "method": "dreamfusion", "seed": 0, "source": "p:1",
         "status": "ok", "reason": None, "seconds": 3.2, "out": str(tmp_path / "a-red-cube")},
        {"name": "bad", "prompt": "a <flying> elephant", "method": "dreamfusion", "seed": 0, "source": "p:2",
         "status": "failed", "reason": "prompt has words the toy prior does not know: flying", "seconds": None},
    ]
    page = write_gallery(entries, tmp_path).read_text()
    assert 'data-ok="1" data-failed="1"' in page and 'href="a-red-cube/mesh.glb"' in page
    assert "IoU all views 0.91; vol. IoU 0.55; Chamfer 0.1" in page
    assert "&lt;flying&gt;" in page and "does not know: flying" in page
    assert json.loads((tmp_path / "summary.json").read_text())[1]["status"] == "failed"


def test_batch_cli_all_cached_takes_the_fast_path_without_prefect(fake_home):
    """A second `distill3d batch` over cached prompts: no stage runs, Prefect is never imported, bad rows fail."""
    prior = fake_home / "prior"
    for prompt in ("a red cube", "a blue torus"):  # fill the store as a first batch would
        fake_stages.fill_store(prompt, prior)
    (fake_home / "p.txt").write_text("a red cube\na blue torus\na flying elephant\n")
    before = fake_stages.runs(fake_home / "runs.log")
    script = textwrap.dedent(f"""
        import sys
        import fake_stages; fake_stages.register()
        from flows.cli import app
        try:
            app(["batch", "--prompts", "p.txt", "--prior", {str(prior)!r}, "--out", "gallery"])
        except SystemExit as e:
            print("exit", e.code)
        assert "prefect" not in sys.modules, "the all-cached batch imported prefect"
    """)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    r = subprocess.run([sys.executable, "-c", script], cwd=fake_home, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "exit 1" in r.stdout, r.stderr
    assert fake_stages.runs(fake_home / "runs.log") == before
    summary = json.loads((fake_home / "gallery" / "summary.json").read_text())
    assert [e["status"] for e in summary] == ["cached", "cached", "failed"]
    assert (fake_home / "gallery" / "a-red-cube" / "mesh.glb").is_file()
    assert "1 failed" in r.stderr and "flying" in r.stderr


def test_batch_cli_rejects_a_missing_source_in_one_line(fake_home):
    r = CliRunner().invoke(__import__("flows.cli", fromlist=["app"]).app,
                           ["batch", "--prompts", str(fake_home / "none.txt"), "--prior", str(fake_home / "prior"),
                            "--out", str(fake_home / "g")])
    assert r.exit_code == 2 and r.stderr.startswith("error: prompt source") and r.stderr.count("\n") == 1
    assert not (fake_home / "g").exists()


def test_batch_workers_share_the_cores(monkeypatch) -> None:
    """Each of `concurrency` subprocess workers gets cores / concurrency threads (at least 1); for a batch's workers
    an explicit OMP_NUM_THREADS wins (make run's stages get cores / jobs or --threads whatever is set)."""
    import os

    from flows.threads import worker_env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    cores = os.cpu_count() or 1
    assert worker_env(2)["OMP_NUM_THREADS"] == str(max(1, cores // 2)) == worker_env(2)["MKL_NUM_THREADS"]
    assert worker_env(10 * cores)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_env(2, keep_explicit=True)["OMP_NUM_THREADS"] == "3"
    assert worker_env(2)["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert worker_env(2, threads=4)["MKL_NUM_THREADS"] == "4"
