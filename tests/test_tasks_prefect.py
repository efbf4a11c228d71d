"""Prefect plumbing with fake stages: task caching by stage key, the dreamfusion flow, and the fast path.

All Prefect tests live in this module and share one temporary DISTILL3D_HOME/PREFECT_HOME: a fresh PREFECT_HOME
costs ~18 s of database migrations, each later flow run ~1 s in the same process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fake_stages

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a red cube"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefect")
    names = ["DISTILL3D_HOME", "PREFECT_HOME", "DISTILL3D_PARAMS", "FAKE_STAGE_LOG"]
    saved = {n: os.environ.get(n) for n in names}
    os.environ["DISTILL3D_HOME"] = str(root / "home")
    os.environ["PREFECT_HOME"] = str(root / "home" / "prefect")
    os.environ["DISTILL3D_PARAMS"] = str(root / "params.yaml")
    os.environ["FAKE_STAGE_LOG"] = str(root / "runs.log")
    (root / "params.yaml").write_text("extract_mesh:\n  resolution: 16\n")
    (root / "prior").mkdir()
    (root / "prior" / "w.bin").write_bytes(b"toy weights")
    import tasks.env

    tasks.env.configure()  # re-reads the environment if prefect was imported already
    fake_stages.register()
    yield root
    fake_stages.unregister()
    for n, v in saved.items():
        if v is None:
            os.environ.pop(n, None)
        else:
            os.environ[n] = v
    tasks.env.configure()


def runs(home: Path) -> list[str]:
    return fake_stages.runs(home / "runs.log")


def test_stage_task_caches_by_stage_key_and_misses_when_store_dir_is_gone(home):
    from prefect import flow

    from stages.core.protocol import get_stage
    from tasks.stage_task import stage_task

    @flow
    def one_stage(prior: str, steps: int):
        run = stage_task(get_stage("nerf_sds"))
        return run(params={"prompt": PROMPT, "optimize": {"steps": steps}}, inputs={"prior": prior}, return_state=True)

    before = len(runs(home))
    first = one_stage(str(home / "prior"), 7)
    assert first.name == "Completed" and len(runs(home)) == before + 1
    out = Path(first.result())
    assert out.parent == home / "home" / "store" / "nerf_sds" and (out / "manifest.json").is_file()

    copy = home / "prior_copy"  # same content elsewhere: same key
    shutil.copytree(home / "prior", copy)
    second = one_stage(str(copy), 7)
    assert second.name == "Cached" and second.result() == str(out) and len(runs(home)) == before + 1

    shutil.rmtree(out)  # a deleted output is a miss, then cached again
    third = one_stage(str(home / "prior"), 7)
    assert third.name == "Completed" and (out / "manifest.json").is_file() and len(runs(home)) == before + 2
    assert one_stage(str(home / "prior"), 7).name == "Cached"
    assert one_stage(str(home / "prior"), 8).name == "Completed"  # other params: other key


def _chain(prior: str, method: str = "dreamfusion", steps: int = 3):
    from flows.plan import resolve_chain

    return resolve_chain(method, PROMPT, inputs={"prior": prior}, overrides={"nerf_sds": {"optimize.steps": steps}})


def _generate_fresh_process(tmp_path: Path, prior: str, *args: str) -> subprocess.CompletedProcess:
    """`distill3d generate` in a new process that must not import Prefect (its fast path)."""
    script = textwrap.dedent(f"""
        import sys
        import fake_stages; fake_stages.register(); fake_stages.register_method()
        from flows.cli import app
        try:
            app(["generate", "--prompt", {PROMPT!r}, "--prior", {prior!r}, "--steps", "3", *{list(args)!r}])
        except SystemExit as e:
            assert e.code in (0, None), e.code
        assert "prefect" not in sys.modules, "the fast path imported prefect"
    """)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_dreamfusion_flow_matches_plan_and_generate_takes_the_fast_path(home, tmp_path):
    from flows.dreamfusion import dreamfusion
    from flows.plan import plan

    prior = str(home / "prior")
    assert not plan(_chain(prior)).complete
    outputs = dreamfusion(PROMPT, prior=prior, params={"nerf_sds": {"optimize.steps": 3}})
    assert list(outputs) == ["nerf_sds", "extract_mesh", "bake_texture", "export_asset", "evaluate"]
    mesh_manifest = json.loads((Path(outputs["extract_mesh"]) / "manifest.json").read_text())
    assert mesh_manifest["params"] == {"resolution": 16}  # from DISTILL3D_PARAMS

    planned = plan(_chain(prior))
    assert planned.complete and planned.outputs == outputs  # the flow and the planner agree on every key

    # a repeated identical generate: a fresh process that never imports prefect and copies the outputs
    before = len(runs(home))
    r = _generate_fresh_process(tmp_path, prior, "--out", "out")
    assert r.returncode == 0, r.stderr
    assert len(runs(home)) == before  # no stage ran (and, above, Prefect was never imported: no flow run)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "mesh.glb", "metrics.json", "turntable.gif",
                                                     "views.png"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cached"] is True and manifest["prompt"] == PROMPT
    assert manifest["stages"]["nerf_sds"]["params"]["optimize"]["steps"] == 3
    assert not list((home / "home" / "work" / "nerf_sds").iterdir())  # checkpoints dropped once complete


def test_a_new_method_is_one_definition(home, tmp_path):
    """A method made of existing stages, defined once (fake_stages.TINY_METHOD: nerf_sds -> extract_mesh ->
    export_asset -> evaluate), runs through its derived Prefect flow, the planner and the CLI, and shares the stages
    it has in common with DreamFusion through the store."""
    from flows.method_flow import method_flow
    from flows.methods import get_method
    from flows.plan import plan, resolve_chain

    fake_stages.register_method()
    try:
        spec = get_method("tinymethod")
        prior = str(home / "prior")
        flow = method_flow(spec)
        assert flow.name == "tinymethod"
        before = runs(home)
        outputs = flow(PROMPT, prior=prior, params=spec.shortcut_overrides(steps=3))
        assert list(outputs) == ["nerf_sds", "extract_mesh", "export_asset", "evaluate"]
        new = runs(home)[len(before):]
        assert new == ["export_asset", "evaluate"]  # nerf_sds and extract_mesh: DreamFusion's, from the store
        chain = resolve_chain(spec, PROMPT, inputs={"prior": prior}, overrides=spec.shortcut_overrides(steps=3))
        assert plan(chain).outputs == outputs
        r = _generate_fresh_process(tmp_path, prior, "--method", "tinymethod", "--out", "tiny")
        assert r.returncode == 0, r.stderr
        assert json.loads((tmp_path / "tiny" / "manifest.json").read_text())["method"] == "tinymethod"
    finally:
        fake_stages.unregister_method()


def test_server_start_ahead_imports_the_prior_code_while_prefects_server_starts(home):
    """`make_asset` starts Prefect's temporary server before a flow run (flows/server_start.py): the server answers,
    the prior's code was imported meanwhile, the flow then runs on that server; and nothing is imported for a plan
    whose prior-taking stage is in the store."""
    import httpx
    from prefect.server.api.server import SubprocessASGIServer

    from flows.plan import plan
    from flows.server_start import PRIOR_CODE, modules_to_import, start_server

    planned = plan(_chain(str(home / "prior"), steps=5))
    assert not planned.complete and modules_to_import(planned) == PRIOR_CODE
    done = plan(_chain(str(home / "prior"), steps=5))
    done.steps[0].complete = True  # nerf_sds (the only stage taking the prior) in the store: nothing slow to import
    assert modules_to_import(done) == ()
    assert modules_to_import(done, from_stage="nerf_sds") == PRIOR_CODE  # ... unless it is forced to run again

    start_server(planned)
    server = SubprocessASGIServer()
    assert server.running and httpx.get(f"{server.api_url}/health").status_code == 200
    assert all(m in sys.modules for m in PRIOR_CODE)
    from flows.dreamfusion import dreamfusion

    outputs = dreamfusion(PROMPT, prior=str(home / "prior"), params={"nerf_sds": {"optimize.steps": 5}})
    assert SubprocessASGIServer().api_url == server.api_url and outputs.keys() == {s.name for s in planned.steps}
