"""`distill3d` CLI input errors: one line on stderr, exit code 2, no output, and Prefect never started."""

from __future__ import annotations


import pytest
from typer.testing import CliRunner

import fake_stages
from flows.cli import app


@pytest.fixture
def prior(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL3D_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DISTILL3D_PARAMS", str(tmp_path / "params.yaml"))
    (tmp_path / "params.yaml").write_text("nerf_sds:\n  optimize:\n    steps: 5\n")
    (tmp_path / "prior").mkdir()
    (tmp_path / "prior" / "w.bin").write_bytes(b"w")
    fake_stages.register()
    yield tmp_path / "prior"
    fake_stages.unregister()


def generate(tmp_path, prior, *args):
    argv = ["generate", "--prior", str(prior), "--out", str(tmp_path / "out"), *args]
    return CliRunner().invoke(app, argv)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "a flying elephant"], "error: prompt 'a flying elephant' has words the toy prior does not know"),
        (["--prompt", " "], "error: empty prompt"),
        (["--prompt", "a red cube", "--steps", "0"],
         "error: invalid param nerf_sds.optimize.steps: Input should be greater than or equal to 1 (got 0)"),
        (["--prompt", "a red cube", "--set", "nerf_sds.colour=red"],
         "error: invalid param nerf_sds.colour: Extra inputs are not permitted (got 'red')"),
        (["--prompt", "a red cube", "--set", "nerf.steps=3"], "error: params for unknown stage(s) ['nerf']"),
        (["--prompt", "a red cube", "--set", "steps=3"], "error: --set 'steps=3': the key must start with a stage"),
        (["--prompt", "a red cube", "--device", "tpu"], "error: --device must be cpu or cuda"),
        (["--prompt", "a red cube", "--method", "nosuchmethod"], "error: unknown method 'nosuchmethod'"),
        (["--prompt", "a red cube", "--depth-prior", "sd2-depth"],
         "error: --depth-prior is for --method textmesh, not dreamfusion"),
        (["--prompt", "a red cube", "--input", "depth_prior"], "error: bad --input 'depth_prior'"),
    ],
)
def test_generate_rejects_bad_input_in_one_line(tmp_path, prior, args, message):
    result = generate(tmp_path, prior, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_generate_missing_prior(tmp_path, prior):
    result = generate(tmp_path, tmp_path / "nope", "--prompt", "a red cube")
    assert result.exit_code == 2 and "error: prior not found at" in result.stderr
    assert "dvc repro train_prior" in result.stderr


def test_toyworld_gt_and_evaluate_reject_bad_input(tmp_path, prior):
    result = CliRunner().invoke(app, ["toyworld", "gt", "--prompt", "a red elephant", "--out", str(tmp_path / "g.glb")])
    assert result.exit_code == 2 and result.stderr.startswith("error: prompt 'a red elephant'")
    assert not (tmp_path / "g.glb").exists()
    result = CliRunner().invoke(app, ["evaluate", "--asset", str(tmp_path / "none.glb"), "--prompt", "a red cube"])
    assert result.exit_code == 2 and result.stderr.startswith("error: asset not found")


def test_evaluate_a_glb_file(tmp_path, prior):
    glb = tmp_path / "a.glb"
    glb.write_bytes(b"glTF")
    out = tmp_path / "m" / "metrics.json"
    result = CliRunner().invoke(app, ["evaluate", "--asset", str(glb), "--prompt", "a red cube", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert '"iou": 0.9' in out.read_text() and '"prompt": "a red cube"' in result.stdout
