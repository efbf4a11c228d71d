"""Resume between stages and from a chosen stage, with `distill3d generate` against the shared Prefect server.

1. A generate killed (SIGKILL) after nerf_sds finished: the re-run reuses nerf_sds (its output untouched) and runs
   only the unfinished stages; nothing partial is ever taken for complete.
2. `--from-stage extract_mesh`: extract_mesh and everything after it run again (forced, though cached), nerf_sds is
   reused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_server import PRIOR, REPO, shared_server, tiny_set_args

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not PRIOR.exists(), reason=f"toy prior missing at {PRIOR} (dvc repro train_prior)")]

# a heavier mesh stage than TINY's, so that the kill lands while it runs
ARGS = tiny_set_args({"extract_mesh": {"resolution": 64, "match_views": 4, "match_size": 32}})


def _complete(store: Path, stage: str) -> list[Path]:
    """Finished outputs of `stage` in the store (hidden temp dirs of running or killed writers excluded)."""
    from stages.core.store import is_complete

    root = store / stage
    return [d for d in (root.iterdir() if root.is_dir() else ()) if not d.name.startswith(".") and is_complete(d)]


def _generate(env: dict, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "generate", "--prompt", "a red cube", "--prior", str(PRIOR),
            "--out", str(out), *ARGS, *extra]


def test_killed_flow_reruns_only_unfinished_stages_and_from_stage_forces_the_rest(tmp_path):
    server = shared_server()
    env = {**server.env, "DISTILL3D_HOME": str(tmp_path / "home")}
    store, out = tmp_path / "home" / "store", tmp_path / "asset"

    proc = subprocess.Popen(_generate(env, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not _complete(store, "nerf_sds"):
        time.sleep(0.02)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and anything it started
    proc.wait(timeout=30)
    stderr = proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill: {stderr[-2000:]}"
    [nerf] = _complete(store, "nerf_sds")
    done_before = {s: _complete(store, s) for s in ("extract_mesh", "export_asset", "evaluate")}
    assert not done_before["export_asset"] and not out.exists(), "killed too late: every stage had finished"
    nerf_manifest = (nerf / "manifest.json").read_text()

    t0 = time.perf_counter()
    r = subprocess.run(_generate(env, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    rerun_seconds = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert (nerf / "manifest.json").read_text() == nerf_manifest  # reused, not re-run
    chain = json.loads((out / "manifest.json").read_text())["stages"]
    assert chain["nerf_sds"]["out"] == str(nerf)
    for stage in ("extract_mesh", "export_asset", "evaluate"):
        assert len(_complete(store, stage)) == 1, stage
    # the killed run's temp dirs were never taken for outputs and were cleaned when their stage ran again
    assert not [p for p in store.rglob(".*.tmp-*")]
    print(f"re-run after kill (extract_mesh done before kill: {bool(done_before['extract_mesh'])}): "
          f"{rerun_seconds:.1f} s")

    # --from-stage: same params, so everything is cached; extract_mesh and after must run anyway
    mesh_dir = Path(chain["extract_mesh"]["out"])
    mesh_inode = mesh_dir.stat().st_ino  # a re-run renames a fresh dir into place: a new inode
    r = subprocess.run(_generate(env, out, "--from-stage", "extract_mesh"), cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done (from extract_mesh)" in r.stderr
    assert (nerf / "manifest.json").read_text() == nerf_manifest
    again = json.loads((out / "manifest.json").read_text())
    assert again["from_stage"] == "extract_mesh" and again["stages"]["nerf_sds"]["out"] == str(nerf)
    assert again["stages"]["extract_mesh"]["out"] == str(mesh_dir)  # same params, same key, same place ...
    assert mesh_dir.stat().st_ino != mesh_inode  # ... but run again
    assert (out / "mesh.glb").read_bytes()[:4] == b"glTF"

    bad = subprocess.run(_generate(env, out, "--from-stage", "nerf"), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --from-stage 'nerf' is not a stage of dreamfusion")
