"""DreamFusion speed and quality on this machine (run by hand; never part of the test suite).

Every time is also given as a multiple of a reference measured in the same run: 1000 batch-2 forward passes of the
prior (one CFG evaluation each: the least 1000 SDS steps can cost), so machines of the same kind compare.

    reference   1000 batch-2 UNet forwards of the default prior (measured at the start and the end; the mean)
    step        the SDS step split (render / prior / backward / other) over a whole default run, ms and x forward
    step_prompts  the same for each benchmark prompt (not part of the default sections; its own reference)
    e2e         `distill3d generate --method dreamfusion` at default settings on prompts the tests do not use, for
                each seed: wall seconds, per-stage seconds (manifests), x reference, and the quality metrics
                (all-view IoU, volumetric IoU, Chamfer, colour error, normal error); then the cached re-run
    throughput  `distill3d batch` of 8 prompts at concurrency 1 and 2 (--concurrency): prompts per hour
    scaling     the nerf_sds stage alone at 250 / 500 / 1000 steps and at render size 32 / 48 / 64

    python benchmarks/bench_dreamfusion.py [--sections reference,step,e2e,throughput,scaling] [--seeds 0,1]
Writes benchmarks/results/dreamfusion.json (merged with earlier sections) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PROMPTS = ["a red cube", "a blue torus", "a yellow cylinder", "a green cone"]  # not used by any test
BATCH = ["a red cube", "a blue torus", "a yellow cylinder", "a green cone", "a purple sphere", "an orange cube",
         "a white cylinder", "a red torus"]
RESULTS = REPO / "benchmarks" / "results" / "dreamfusion.json"


def _env(home: Path) -> dict:
    return {**os.environ, "DISTILL3D_HOME": str(home), "PREFECT_HOME": str(home / "prefect")}


def reference(prior_dir: Path, n: int = 1000) -> float:
    """Seconds of ``n`` batch-2 forward passes of the prior (the CFG batch of one SDS step), with the heap set as
    the distillation loop sets it (``optimize.heap``), so the step and its reference share the allocator."""
    import torch

    from distill3d.optimize.heap import keep_freed_memory
    from distill3d.priors.loading import load_prior

    keep_freed_memory()
    prior = load_prior(prior_dir)
    x = torch.randn(2, 3 if prior.space == "pixel" else 4, prior.resolution, prior.resolution)
    if prior.space == "latent":
        x = torch.randn(2, 4, prior.resolution // prior.vae_scale_factor, prior.resolution // prior.vae_scale_factor)
    text = prior.encode_text(["a red cube", ""])
    t = torch.tensor([500, 500])
    with torch.no_grad():
        for _ in range(10):
            prior.predict_noise(x, t, text)
        t0 = time.perf_counter()
        for _ in range(n):
            prior.predict_noise(x, t, text)
    return time.perf_counter() - t0


def step_split(prior_dir: Path, params_file: Path, prompt: str = "a red cube") -> dict:
    """A default nerf_sds run's loop timings per step (render, prior, backward, other), in ms."""
    from distill3d.fields.nerf import RadianceField
    from distill3d.optimize.loop import distill
    from distill3d.optimize.scene import volume_scene
    from flows.plan import stage_params
    from stages.shared.prompted import load_stage_prior

    params = stage_params("nerf_sds", {"prompt": prompt, "seed": 0, "device": "cpu"}, None, params_file)
    prior = load_stage_prior(params, prior_dir)
    field = RadianceField(params.field)
    hist = distill([volume_scene(field, params.optimize)], prior, params.prompt, params.optimize, seed=0,
                   progress=False, guidance=params.guidance)
    steps = hist["steps"]
    return {k: round(v / steps * 1000, 2) for k, v in hist["seconds"].items()}


def step_row(step_ms: dict, forward_ms: float) -> dict:
    """A step split in ms and as multiples of the prior's forward pass (``forward_ms``)."""
    return {"ms": step_ms, "x_forward": {k: round(v / forward_ms, 2) for k, v in step_ms.items()}}


def generate(prompt: str, out: Path, home: Path, *extra: str) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "generate", "--method", "dreamfusion", "--prompt",
                           prompt, "--out", str(out), *extra], cwd=REPO, env=_env(home), capture_output=True,
                          text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"], "seconds": seconds}
    manifest = json.loads((out / "manifest.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    from distill3d.nested import lookup

    return {"seconds": round(seconds, 2), "cached": manifest.get("cached"),
            "stages": {k: v.get("seconds") for k, v in manifest["stages"].items()},
            **{k: lookup(metrics, p) for k, p in (("iou_all_views", "iou_all_views"), ("volume_iou", "volume.iou"),
                                                  ("chamfer", "chamfer.chamfer"), ("colour_error", "colour_error_lab"),
                                                  ("colour", "colour_name"), ("normal_error", "normals.error_deg"),
                                                  ("saturation_excess", "saturation.excess"))}}


def e2e(prompts: list[str], seeds: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-df-") as tmp:
        home = Path(tmp) / "home"
        # Prefect's first start migrates its database (~18 s, once per machine): not part of an asset's time
        subprocess.run([sys.executable, "-c", "import tasks, prefect; from prefect import flow\n"
                        "flow(lambda: None, name='warm')()"], cwd=REPO, env=_env(home), capture_output=True)
        for prompt in prompts:
            for seed in seeds:
                out = Path(tmp) / f"{prompt}-{seed}".replace(" ", "_")
                row = {"prompt": prompt, "seed": seed, **generate(prompt, out, home, "--seed", str(seed))}
                again = generate(prompt, Path(tmp) / "again", home, "--seed", str(seed))
                row["cached_seconds"] = again["seconds"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def throughput(prompts: list[str], levels: list[int]) -> dict:
    out = {}
    for concurrency in levels:
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
            home = Path(tmp) / "home"
            src = Path(tmp) / "prompts.txt"
            src.write_text("\n".join(prompts) + "\n")
            subprocess.run([sys.executable, "-c", "import tasks, prefect; from prefect import flow\n"
                            "flow(lambda: None, name='warm')()"], cwd=REPO, env=_env(home), capture_output=True)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "flows.cli", "batch", "--prompts", str(src), "--out",
                                   str(Path(tmp) / "out"), "--concurrency", str(concurrency)], cwd=REPO,
                                  env=_env(home), capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            out[str(concurrency)] = {"seconds": round(seconds, 1), "ok": proc.returncode == 0,
                                     "prompts_per_hour": round(len(prompts) * 3600 / seconds, 1)}
            print(json.dumps({"concurrency": concurrency, **out[str(concurrency)]}), flush=True)
    return out


def scaling(prior_dir: Path) -> list[dict]:
    rows = []
    for key, value in (("optimize.steps", 250), ("optimize.steps", 500), ("optimize.steps", 1000),
                       ("optimize.render_size", 48), ("optimize.render_size", 64)):
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "stages", "nerf_sds", "--params", "params.yaml", "--set",
                                   'prompt="a red cube"', "--set", f"{key}={value}", "--in", f"prior={prior_dir}",
                                   "--out", str(Path(tmp) / "out")], cwd=REPO, env=_env(Path(tmp) / "home"),
                                  capture_output=True, text=True)
            rows.append({"param": key, "value": value, "seconds": round(time.perf_counter() - t0, 1),
                         "ok": proc.returncode == 0})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="reference,step,e2e,throughput,scaling")
    parser.add_argument("--prompts", nargs="*", default=PROMPTS)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--prior", type=Path, default=REPO / "models" / "toy_prior")
    parser.add_argument("--concurrency", default="1,2", help="throughput: batch concurrency levels to time")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    # The machine each section ran on, kept with the section (a later run of other sections leaves it alone).
    machine = {"cpus": os.cpu_count(), "threads": os.environ.get("OMP_NUM_THREADS", "default"),
               "date": time.strftime("%Y-%m-%d")}
    # The step's and e2e rows' multiples use this run's reference; a later run of other sections keeps its own
    # references in its section (this VM's speed drifts by ~25 % between runs), never overwriting the ones they used.
    ref = reference(args.prior)
    print(f"reference (1000 batch-2 forwards): {ref:.1f} s", flush=True)
    if "step" in sections:
        result["step"] = step_row(step_split(args.prior, REPO / "params.yaml"), ref)  # ms per forward = s per 1000
        print(json.dumps(result["step"]), flush=True)
    if "step_prompts" in sections:
        result["step_prompts"] = {"rows": {}}
        for prompt in args.prompts:  # each printed as it finishes (~35 s each here)
            step = step_split(args.prior, REPO / "params.yaml", prompt)
            row = result["step_prompts"]["rows"][prompt] = step_row(step, ref)
            print(prompt, json.dumps(row), flush=True)
    if "e2e" in sections:
        rows = e2e(args.prompts, seeds)
        for r in rows:
            r["x_reference"] = round(r["seconds"] / ref, 2)
        result["e2e"] = rows
    if "throughput" in sections:
        result["throughput"] = {**result.get("throughput", {}),
                                **throughput(BATCH, [int(c) for c in args.concurrency.split(",")])}
    if "scaling" in sections:
        result["scaling"] = {"rows": scaling(args.prior)}
    refs = {"reference_s": round(ref, 2), "reference_end_s": round(reference(args.prior), 2), "machine": machine}
    if sections & {"step", "e2e"}:
        result.update(refs)
    for section in sections & {"throughput", "scaling", "step_prompts"}:
        result[section].update(refs)
    ref_end = refs["reference_end_s"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}; reference at the end {ref_end:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
