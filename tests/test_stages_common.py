"""stages/core: params, content hashes, stage keys, atomic cached execution (no Prefect, no torch)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from stages.core.code import code_version
from stages.core.execute import execute
from stages.core.keys import dir_content_hash, stage_key
from stages.core.params import load_params
from stages.core.protocol import StageError, StageParams, register_stage, unregister_stage
from stages.core.store import is_complete, read_manifest, work_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL3D_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class Guidance(BaseModel):
    model_config = {"extra": "forbid"}
    guidance_scale: float = Field(100.0, gt=0)


class SdsParams(StageParams):
    prompt: str = "a red cube"
    steps: int = Field(10, ge=1)
    guidance: Guidance = Guidance()


def make_stage(name="nerf_sds", inputs=("prior",), calls=None, fail=False):
    """A fake stage module: writes out.txt from its params and input files; counts runs in `calls`."""
    module = types.ModuleType(f"fake_{name}")
    module.NAME, module.INPUTS, module.Params = name, inputs, SdsParams

    def run(params, inputs, out):
        if calls is not None:
            calls.append(params)
        (out / "partial.txt").write_text("half done")
        if fail:
            raise RuntimeError("boom")
        text = params.prompt + "".join(sorted(str(dir_content_hash(p))[:8] for p in inputs.values()))
        (out / "out.txt").write_text(text)
        return {"loss": 0.5}

    module.run = run
    return module


def write_params(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


# ---------------------------------------------------------------------------------------------------- params


def test_load_params_section_and_overrides(tmp_path):
    pfile = write_params(tmp_path / "params.yaml", {"nerf_sds": {"steps": 5, "guidance": {"guidance_scale": 7.5}}})
    stage = make_stage()
    p = load_params(stage, pfile, None, ["guidance.guidance_scale=50", "prompt=a blue torus"])
    assert (p.steps, p.guidance.guidance_scale, p.prompt) == (5, 50.0, "a blue torus")
    p = load_params(stage, pfile, None, {"steps": 3, "guidance": {"guidance_scale": 2}})
    assert (p.steps, p.guidance.guidance_scale) == (3, 2.0)
    assert load_params(stage, None, None, None) == SdsParams()  # no file: defaults


def test_load_params_errors_name_the_field_path(tmp_path):
    pfile = write_params(tmp_path / "params.yaml", {"nerf_sds": {"steps": 5}})
    stage = make_stage()
    with pytest.raises(StageError) as err:
        load_params(stage, pfile, None, ["guidance.guidance_scale=-1"])
    assert str(err.value) == (
        "invalid param nerf_sds.guidance.guidance_scale: Input should be greater than 0 (got -1)"
    )
    with pytest.raises(StageError, match=r"^invalid param nerf_sds\.guidance\.scale: Extra inputs are not permitted"):
        load_params(stage, pfile, None, ["guidance.scale=3"])
    with pytest.raises(StageError, match=r"nerf_sds\.steps: Input should be a valid integer.*\(got 'many'\)"):
        load_params(stage, pfile, None, ["steps=many"])
    with pytest.raises(StageError, match="not found"):
        load_params(stage, tmp_path / "missing.yaml", None, [])
    with pytest.raises(StageError, match="expected KEY=VALUE"):
        load_params(stage, pfile, None, ["steps"])
    with pytest.raises(StageError, match="no section 'other'"):
        load_params(stage, pfile, "other", [])
    for exc in (err.value,):
        assert "\n" not in str(exc)


# ---------------------------------------------------------------------------------------------------- hashes


def test_dir_content_hash_follows_content_not_location(tmp_path):
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "x.bin").write_bytes(b"\x00\x01")
    (a / "sub" / "y.txt").write_text("y")
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    assert dir_content_hash(a) == dir_content_hash(b)
    (b / "manifest.json").write_text("{}")  # the manifest is not content
    assert dir_content_hash(a) == dir_content_hash(b)
    (b / "sub" / "y.txt").write_text("z")
    assert dir_content_hash(a) != dir_content_hash(b)
    (b / "sub" / "y.txt").write_text("y")
    (b / "sub" / "y.txt").rename(b / "sub" / "w.txt")  # names are content too
    assert dir_content_hash(a) != dir_content_hash(b)
    assert dir_content_hash(a / "x.bin") == dir_content_hash(b / "x.bin")  # a single file: its bytes


def test_hash_cache_notices_changed_files(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    os.utime(f, ns=(10**18, 10**18))  # old enough to be cached
    first = dir_content_hash(f)
    assert dir_content_hash(f) == first
    f.write_bytes(b"b" * 100)  # same size, new mtime
    assert dir_content_hash(f) != first


def test_stage_key_same_for_moved_copies_different_for_content_or_params(tmp_path):
    prior = tmp_path / "prior"
    prior.mkdir()
    (prior / "w.bin").write_bytes(b"weights")
    moved = tmp_path / "other" / "place"
    shutil.copytree(prior, moved)
    stage = make_stage()
    p = SdsParams()
    key = stage_key(stage, p, {"prior": prior})
    assert stage_key(stage, p, {"prior": moved}) == key
    assert stage_key(stage, SdsParams(steps=11), {"prior": prior}) != key
    (moved / "w.bin").write_bytes(b"weightz")
    assert stage_key(stage, p, {"prior": moved}) != key
    with pytest.raises(StageError, match=r"input 'prior' of stage nerf_sds not found .*an upstream stage makes it"):
        stage_key(stage, p, {"prior": tmp_path / "nope"})


# ---------------------------------------------------------------------------------------------------- execute


@pytest.fixture
def prior(tmp_path):
    d = tmp_path / "prior"
    d.mkdir()
    (d / "w.bin").write_bytes(b"weights")
    return d


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


def test_execute_runs_once_then_hits(tmp_path, prior):
    calls: list = []
    stage, out = make_stage(calls=calls), tmp_path / "data" / "nerf"
    assert execute(stage, SdsParams(), {"prior": prior}, out) == out.absolute()
    manifest = read_manifest(out)
    assert manifest["stage"] == "nerf_sds" and manifest["extra"] == {"loss": 0.5}
    assert manifest["content_hash"] == dir_content_hash(out)
    assert manifest["inputs"]["prior"]["hash"] == dir_content_hash(prior)
    assert is_complete(out, manifest["key"]) and not is_complete(out, "other")
    execute(stage, SdsParams(), {"prior": prior}, out)
    assert len(calls) == 1  # hit
    execute(stage, SdsParams(steps=3), {"prior": prior}, out)
    assert len(calls) == 2  # new key: rerun, replaced in place
    assert read_manifest(out)["params"]["steps"] == 3
    execute(stage, SdsParams(steps=3), {"prior": prior}, out, force=True)
    assert len(calls) == 3
    assert leftovers(out.parent) == []


def test_failed_run_leaves_nothing(tmp_path, prior):
    out = tmp_path / "data" / "nerf"
    with pytest.raises(RuntimeError, match="boom"):
        execute(make_stage(fail=True), SdsParams(), {"prior": prior}, out)
    assert not out.exists() and leftovers(out.parent) == []


def test_dir_without_manifest_is_rerun_and_stale_temp_cleaned(tmp_path, prior):
    calls: list = []
    out = tmp_path / "data" / "nerf"
    out.mkdir(parents=True)
    (out / "out.txt").write_text("from a killed run")
    (out.parent / ".nerf.tmp-dead").mkdir()  # left by a killed process
    execute(make_stage(calls=calls), SdsParams(), {"prior": prior}, out)
    assert len(calls) == 1 and (out / "out.txt").read_text() != "from a killed run"
    assert leftovers(out.parent) == []


def test_missing_input_names_the_path_and_how_to_make_it(tmp_path):
    with pytest.raises(StageError, match=r"input 'prior' of stage nerf_sds not found at .*nope .*`dvc repro`"):
        execute(make_stage(), SdsParams(), {"prior": tmp_path / "nope"}, tmp_path / "out")
    with pytest.raises(StageError, match=r"needs input 'prior'"):
        execute(make_stage(), SdsParams(), {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


SLOW_STAGE = '''
import os, time
from pathlib import Path
from stages.core.protocol import StageParams
NAME = "slow"
INPUTS = ()
class Params(StageParams):
    seconds: float = 0.5
def run(params, inputs, out):
    with open(os.environ["RUN_LOG"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    (out / "a.txt").write_text("first half")
    time.sleep(params.seconds)
    (out / "b.txt").write_text(str(os.getpid()))
    return {}
'''


def test_concurrent_execute_of_one_key_gives_one_valid_output(tmp_path):
    (tmp_path / "slow_stage.py").write_text(SLOW_STAGE)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", "RUN_LOG": str(tmp_path / "runs.log")}
    script = textwrap.dedent(f"""
        import slow_stage
        from stages.core.execute import execute
        print(execute(slow_stage, slow_stage.Params(), {{}}, {str(tmp_path / 'out')!r}))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0].decode().strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(tmp_path / "out")
    assert len((tmp_path / "runs.log").read_text().split()) == 1  # the second waited, then hit
    manifest = read_manifest(tmp_path / "out")
    assert manifest["content_hash"] == dir_content_hash(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "b.txt", "manifest.json"]


def test_code_version_tracks_the_stage_source(tmp_path, monkeypatch):
    (tmp_path / "v_stage.py").write_text(SLOW_STAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import v_stage

    before = code_version(v_stage)
    (tmp_path / "v_stage.py").write_text(SLOW_STAGE + "# edited\n")
    assert code_version(v_stage) != before


def test_work_dir_survives_a_failed_run_and_goes_after_success(tmp_path, prior):
    stage = make_stage()
    seen = []

    def run(params, inputs, out):
        work = work_dir("nerf_sds", params, inputs)
        ckpt = work / "checkpoint.txt"
        seen.append(ckpt.read_text() if ckpt.exists() else None)
        ckpt.write_text("step 500")
        if len(seen) == 1:
            raise KeyboardInterrupt  # Ctrl-C mid-run
        (out / "out.txt").write_text("done")
        return {}

    stage.run = run
    register_stage(stage)
    try:
        out = tmp_path / "out"
        with pytest.raises(KeyboardInterrupt):
            execute(stage, SdsParams(), {"prior": prior}, out)
        assert not out.exists()
        execute(stage, SdsParams(), {"prior": prior}, out)
        assert seen == [None, "step 500"]  # resumed from the checkpoint
        assert not work_dir("nerf_sds", SdsParams(), {"prior": prior}).joinpath("checkpoint.txt").exists()
    finally:
        unregister_stage("nerf_sds")
