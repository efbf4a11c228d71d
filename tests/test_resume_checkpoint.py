"""Resume inside a long stage: nerf_sds killed (SIGKILL) mid-optimisation continues from its last checkpoint.

Real toy prior, `python -m stages nerf_sds` (what DVC runs; the Prefect task calls the same `execute`). The resumed
run must start at the checkpoint's step, end at the configured number of steps (total across both runs = steps,
not double) and produce the same field as an uninterrupted run (RNG, optimiser and occupancy state restored).
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

from prefect_server import PRIOR, REPO

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not PRIOR.exists(), reason=f"toy prior missing at {PRIOR} (dvc repro train_prior)")]

STEPS, EVERY = 40, 10


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "stages", "nerf_sds", "--set", 'prompt="a red cube"',
            "--set", f"optimize.steps={STEPS}", "--set", f"optimize.checkpoint_every={EVERY}",
            "--set", "preview_size=16", "--set", "preview_views=1", "--in", f"prior={PRIOR}", "--out", str(out)]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "DISTILL3D_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _checkpoint_step(path: Path) -> int | None:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["step"])
    except Exception:  # not there yet (it is written atomically, so never half-read)
        return None


def test_nerf_sds_killed_mid_run_resumes_from_its_checkpoint(tmp_path):
    from safetensors.torch import load_file

    home, out = tmp_path / "home", tmp_path / "nerf"
    proc = subprocess.Popen(_cmd(out), cwd=REPO, env=_env(home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    killed_after = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((home / "work" / "nerf_sds").glob("*/checkpoint.pt"))
        if found and (_checkpoint_step(found[0]) or 0) >= EVERY:
            os.kill(proc.pid, signal.SIGKILL)
            killed_after = found[0]
            break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert killed_after is not None, f"never saw a checkpoint before the run ended: {proc.stderr.read()[-2000:]}"
    resumed_from = _checkpoint_step(killed_after)
    assert EVERY <= resumed_from < STEPS and resumed_from % EVERY == 0
    assert not (out / "manifest.json").exists()  # a killed stage leaves nothing that looks complete

    r = subprocess.run(_cmd(out), cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert history["start_step"] == resumed_from and history["steps_run"] == STEPS - resumed_from
    assert history["steps"] == manifest["extra"]["steps"] == STEPS
    assert len(history["loss_total"]) == STEPS  # the curve is whole: first run's steps + the resumed ones
    assert not killed_after.parent.exists()  # the work dir is gone once the output is complete
    assert not list(out.parent.glob(".nerf.tmp-*"))
    print(f"killed after checkpoint step {resumed_from}; resumed run did {history['steps_run']} of {STEPS} steps")

    # the same stage uninterrupted (another home: no checkpoint, no store): the same field
    clean = tmp_path / "clean"
    r = subprocess.run(_cmd(clean), cwd=REPO, env=_env(tmp_path / "home2"), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    uninterrupted = json.loads((clean / "history.json").read_text())
    assert uninterrupted["start_step"] == 0 and uninterrupted["steps_run"] == STEPS
    resumed_w, clean_w = load_file(out / "field.safetensors"), load_file(clean / "field.safetensors")
    assert resumed_w.keys() == clean_w.keys()
    worst = max(float((resumed_w[k] - clean_w[k]).abs().max()) for k in clean_w)
    assert worst < 1e-4, worst
    final = sum(history["loss_total"][-10:]) / 10
    reference = sum(uninterrupted["loss_total"][-10:]) / 10
    assert abs(final - reference) <= 1e-3 * max(1.0, abs(reference)), (final, reference)
