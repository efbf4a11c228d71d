"""Batch generation on a real Prefect server: a process work pool, prefect.yaml's deployments, two workers.

The server, pool and deployments are shared with the other server tests (tests/prefect_server.py); this module
starts two workers and stops them by PID at its end. Real stages with the real toy prior, tiny sizes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_server import PRIOR, REPO, TINY, shared_server, tiny_set_args

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not PRIOR.exists(), reason=f"toy prior missing at {PRIOR} (dvc repro train_prior)")]


@pytest.fixture(scope="module")
def server():
    s = shared_server()
    workers = [s.start_worker("w1", limit=2), s.start_worker("w2", limit=2)]
    yield s, workers
    for w in workers:
        s.stop(w)  # asserts the PID is gone


def _runs_by_flow(s) -> dict[str, list[dict]]:
    flows = {f["id"]: f["name"] for f in s.api("/flows/filter", {"limit": 50})}
    out: dict[str, list[dict]] = {}
    for run in s.flow_runs():
        out.setdefault(flows.get(run["flow_id"], "?"), []).append(run)
    return out


def test_batch_deployment_runs_prompts_on_the_pool_and_writes_the_gallery(server, tmp_path):
    s, workers = server
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two good prompts and one with words the toy prior does not know\n"
                       "a red cube\na blue torus | seed=1\na flying elephant\n")
    out = tmp_path / "gallery"
    params = {"prompts": str(prompts), "out": str(out), "params": TINY, "inputs": {"prior": str(PRIOR)},
              "concurrency": 2, "deployment": "generate-asset/asset"}
    t0 = time.perf_counter()
    r = s.prefect("deployment", "run", "batch/batch", "--params", json.dumps(params), "--watch",
                  "--watch-interval", "2", "--watch-timeout", "400", timeout=420, check=False)
    seconds = time.perf_counter() - t0
    print(f"batch of 3 prompts over 2 workers: {seconds:.1f} s")
    logs = "\n".join(s.log(f"worker-w{i}")[-4000:] for i in (1, 2))
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}\n{logs}"
    assert all(w.poll() is None for w in workers)

    summary = {e["prompt"]: e for e in json.loads((out / "summary.json").read_text())}
    assert [summary[p]["status"] for p in ("a red cube", "a blue torus", "a flying elephant")] == \
        ["ok", "ok", "failed"], summary
    assert "flying, elephant" in summary["a flying elephant"]["reason"]
    for p in ("a red cube", "a blue torus"):
        asset = Path(summary[p]["out"])
        assert asset.parent == out
        assert (asset / "mesh.glb").read_bytes()[:4] == b"glTF"
        assert (asset / "turntable.gif").is_file() and (asset / "views.png").is_file()
        manifest = json.loads((asset / "manifest.json").read_text())
        assert manifest["stages"]["nerf_sds"]["extra"]["steps"] == TINY["nerf_sds"]["optimize.steps"]
    assert summary["a blue torus"]["seed"] == 1

    page = (out / "index.html").read_text()
    assert page.count('class="card"') == 2 and 'data-ok="2" data-failed="1"' in page
    assert 'href="a-red-cube/mesh.glb"' in page and 'src="a-blue-torus-s1/turntable.gif"' in page
    assert "flying, elephant" in page and "http" not in page.split("<body>")[1]  # offline: no external links

    runs = _runs_by_flow(s)
    batch_runs = runs["batch"]
    asset_runs = [r for r in runs.get("generate-asset", []) if r.get("parent_task_run_id")]
    assert [r["state_type"] for r in batch_runs] == ["COMPLETED"]
    assert sorted(r["state_type"] for r in asset_runs) == ["COMPLETED", "COMPLETED"]  # the bad prompt never ran
    schedules = s.api("/deployments/name/batch/batch")["schedules"]
    assert [(x["schedule"]["cron"], x["active"]) for x in schedules] == [("0 3 * * *", False)]  # harmless default
    artifacts = s.api("/artifacts/filter", {"artifacts": {"key": {"any_": ["batch-gallery"]}}})
    assert artifacts and "2 of 3 prompts succeeded" in artifacts[-1]["data"]


def test_two_runs_of_the_same_prompt_at_once_do_not_corrupt_each_other(server, tmp_path):
    """Two `distill3d generate` processes, same prompt and --out, against the server at the same moment."""
    s, _ = server
    from stages.core.keys import dir_content_hash
    from stages.core.store import read_manifest

    env = {**s.env, "DISTILL3D_HOME": str(tmp_path / "home")}
    out = tmp_path / "same"
    argv = [sys.executable, "-m", "flows.cli", "generate", "--prompt", "a green cone", "--prior", str(PRIOR),
            "--out", str(out), *tiny_set_args()]
    procs = [subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]

    manifest = json.loads((out / "manifest.json").read_text())
    assert (out / "mesh.glb").read_bytes()[:4] == b"glTF"
    for name, info in manifest["stages"].items():
        stage_dir = Path(info["out"])
        stored = read_manifest(stage_dir)
        assert stored is not None and stored["key"] == info["key"], name
        assert stored["content_hash"] == dir_content_hash(stage_dir, use_cache=False), f"{name} corrupted"
    store = tmp_path / "home" / "store"
    assert not [p for p in store.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]  # no leftovers
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))
    # one stage output per stage: the second process waited for the first's lock and reused its output
    outputs = {name: [d for d in (store / name).iterdir() if not d.name.startswith(".")] for name in manifest["stages"]}
    assert all(len(dirs) == 1 for dirs in outputs.values()), outputs
