"""`make run` on a fresh clone, timed: the default experiment, or a smaller one (the issue's first default: two
methods on the default prompts, no comparison runs).

    python benchmarks/bench_make_run.py                                   # methods dreamfusion,textmesh, no runs
    python benchmarks/bench_make_run.py --methods all --runs             # today's whole default experiment

Clones this repository's HEAD into a temporary folder, narrows params.yaml, then times `make run` there. Set-up is
excluded, as the issue measures "after make setup": the clone's .venv is a link to this checkout's and `make -o`
keeps make from re-doing set-up through it (which would re-install into this checkout's venv); the viewer's
node_modules are copied. Writes benchmarks/results/make_run.json (merged by experiment).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "make_run.json"
STAMP = Path(".venv") / ".setup-done"  # the Makefile's set-up stamp


def narrow(params_file: Path, methods: list[str] | None, keep_runs: bool) -> None:
    params = yaml.safe_load(params_file.read_text())
    if methods is not None:
        params["methods"] = methods
    if not keep_runs:
        params["comparison"]["runs"] = {}
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="dreamfusion,textmesh", help="comma-separated, or 'all' (params.yaml's)")
    parser.add_argument("--runs", action="store_true", help="keep params.yaml's comparison runs (sweeps, Janus)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    methods = None if args.methods == "all" else args.methods.split(",")
    if not (ROOT / STAMP).is_file():
        sys.exit(f"error: {ROOT / STAMP} is missing: run `make setup` first (the clone borrows this checkout's venv)")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory(prefix="bench-make-run-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        (clone / ".venv").symlink_to(ROOT / ".venv")
        for modules in ROOT.glob("tools/*/node_modules"):
            shutil.copytree(modules, clone / modules.relative_to(ROOT), symlinks=True)
        narrow(clone / "params.yaml", methods, args.runs)
        t0 = time.perf_counter()
        subprocess.run(["make", "-o", str(STAMP), "run", f"JOBS={args.jobs}"], cwd=clone, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        wall = round(time.perf_counter() - t0, 1)
        ran = len(json.loads(subprocess.run(["dvc", "status", "--json"], cwd=clone, env=env, check=True,
                                            capture_output=True, text=True).stdout or "{}"))
        n_stages = len(subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=clone, env=env, check=True,
                                      capture_output=True, text=True).stdout.split())
    name = f"{args.methods}{'+runs' if args.runs else ''}"
    result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    result[name] = {"wall_s": wall, "stages": n_stages, "out_of_date_after": ran,
                    "jobs": args.jobs, "cpus": os.cpu_count(), "commit": subprocess.run(
                        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| experiment | wall | stages |\n|---|---|---|\n| {name} | {wall / 60:.1f} min | {n_stages} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
