"""`python -m stages` (the command DVC runs): success, the cached rerun, one-line errors with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAKE_STAGE = '''
from pydantic import BaseModel, Field
from stages.core.protocol import StageParams
NAME = "evaluate"
INPUTS = ("asset",)
class Weights(BaseModel):
    iou: float = Field(1.0, gt=0)
class Params(StageParams):
    prompt: str = "a red cube"
    weights: Weights = Weights()
def run(params, inputs, out):
    size = (inputs["asset"] / "mesh.glb").stat().st_size
    (out / "metrics.json").write_text('{"iou": %s, "size": %d}' % (params.weights.iou, size))
    return {"prompt": params.prompt}
'''


@pytest.fixture
def env(tmp_path):
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "evaluate.py").write_text(FAKE_STAGE)
    (tmp_path / "asset").mkdir()
    (tmp_path / "asset" / "mesh.glb").write_bytes(b"glTF" * 10)
    (tmp_path / "params.yaml").write_text("evaluate:\n  weights:\n    iou: 2.0\n")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", "DISTILL3D_HOME": str(tmp_path / "home")}


def stages_cli(tmp_path, env, *args):
    cmd = [sys.executable, "-m", "stages", "fakepkg.evaluate", "--params", "params.yaml", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_runs_then_reports_cached(tmp_path, env):
    args = ["--set", "prompt=a blue torus", "--in", "asset=asset", "--out", "data/eval/x"]
    r = stages_cli(tmp_path, env, *args)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "data/eval/x/manifest.json").read_text())
    assert manifest["params"] == {"prompt": "a blue torus", "weights": {"iou": 2.0}}
    assert manifest["extra"] == {"prompt": "a blue torus"}
    r = stages_cli(tmp_path, env, *args)
    assert r.returncode == 0 and "cached" in r.stderr


def test_json_out_writes_only_the_metrics(tmp_path, env):
    r = stages_cli(tmp_path, env, "--in", "asset=asset", "--out", "data/metrics/x.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "data/metrics/x.json").read_text()) == {"iou": 2.0, "size": 40}
    assert sorted(p.name for p in (tmp_path / "data/metrics").iterdir()) == ["x.json"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "weights.iou=-1", "--in", "asset=asset"],
         "error: invalid param evaluate.weights.iou: Input should be greater than 0 (got -1)"),
        (["--set", "colour=red", "--in", "asset=asset"],
         "error: invalid param evaluate.colour: Extra inputs are not permitted (got 'red')"),
        (["--in", "asset=missing"], "error: input 'asset' of stage evaluate not found at missing"),
        (["--in", "asset"], "error: bad --in 'asset'"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, env, args, message):
    r = stages_cli(tmp_path, env, *args, "--out", "data/eval/x")
    assert r.returncode == 2
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "data/eval/x").exists()
