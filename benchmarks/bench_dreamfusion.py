"""DreamFusion benchmarks on the toy prior (run by hand or `make bench`; never part of the test suite).

1. SDS step time split into render / prior / backward, as a ratio to the prior's own batch-of-2 forward pass
   (one CFG evaluation: conditional + unconditional).
2. End-to-end `distill3d generate` at default settings (params.yaml) for prompts the tests do not use: wall time,
   silhouette IoU and colour against the toy world's ground truth.
3. The cached re-run of the same command.

Writes benchmarks/results/dreamfusion.json and prints a Markdown table.
    python benchmarks/bench_dreamfusion.py [--prompts "a red cube" "a blue torus"] [--skip-e2e]
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
DEFAULT_PROMPTS = ["a red cube", "a blue torus", "a yellow cylinder", "a green cone"]


def step_split(prior_dir: Path, steps: int = 60) -> dict:
    import torch

    from distill3d.fields.nerf import RadianceField
    from distill3d.guidance.sds import SDSConfig
    from distill3d.optimize.config import DistillConfig
    from distill3d.optimize.loop import distill_field
    from distill3d.priors.loading import load_prior

    prior = load_prior(prior_dir)
    x = torch.randn(2, 3, prior.resolution, prior.resolution)
    text = prior.encode_text(["a red cube", ""])
    t = torch.tensor([500, 500])
    with torch.no_grad():
        for _ in range(3):
            prior.predict_noise(x, t, text)
        t0 = time.perf_counter()
        for _ in range(20):
            prior.predict_noise(x, t, text)
    forward = (time.perf_counter() - t0) / 20
    hist = distill_field(RadianceField(), prior, "a red cube", DistillConfig(steps=steps, albedo_only_fraction=0.0),
                         seed=0, progress=False, guidance=SDSConfig(guidance_scale=10.0))
    per_step = {k: v / steps for k, v in hist["seconds"].items()}
    return {"prior_forward_batch2_s": forward, "per_step_s": per_step,
            "ratio_to_prior_forward": {k: v / forward for k, v in per_step.items()}}


def generate(prompt: str, out: Path, home: Path) -> tuple[float, dict]:
    env = {**os.environ, "DISTILL3D_HOME": str(home)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "generate", "--method", "dreamfusion", "--prompt",
                           prompt, "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return seconds, json.loads((out / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", nargs="*", default=DEFAULT_PROMPTS)
    ap.add_argument("--skip-e2e", action="store_true")
    args = ap.parse_args()
    prior = REPO / "models" / "toy_prior"
    result: dict = {"machine": f"{os.cpu_count()} cores", "step_split": step_split(prior), "e2e": []}
    out_file = REPO / "benchmarks" / "results" / "dreamfusion.json"
    if not args.skip_e2e:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            for prompt in args.prompts:
                out = Path(tmp) / prompt.replace(" ", "_")
                first, metrics = generate(prompt, out, home)
                again, _ = generate(prompt, Path(tmp) / (out.name + "_again"), home)
                result["e2e"].append({"prompt": prompt, "first_s": first, "cached_s": again,
                                      "iou_ring_mean": metrics["iou_ring_mean"],
                                      "iou_all_views": metrics["iou_all_views"],
                                      "volume_iou": metrics["volume"]["iou"],
                                      "chamfer": metrics["chamfer"]["chamfer"],
                                      "normal_error_deg": metrics["normals"]["error_deg"],
                                      "roughness_deg": metrics["normals"]["roughness_deg"],
                                      "colour_name": metrics["colour_name"],
                                      "colour_error_lab": metrics["colour_error_lab"],
                                      "saturation_excess": metrics.get("saturation", {}).get("excess")})
    out_file.parent.mkdir(exist_ok=True)
    if args.skip_e2e and out_file.is_file():  # keep the last end-to-end figures
        result["e2e"] = json.loads(out_file.read_text()).get("e2e", [])
    out_file.write_text(json.dumps(result, indent=2))
    s = result["step_split"]
    print(f"prior forward (batch 2): {s['prior_forward_batch2_s'] * 1e3:.1f} ms")
    print("| part | ms / step | x prior forward |\n|---|---|---|")
    for k, v in s["per_step_s"].items():
        print(f"| {k} | {v * 1e3:.1f} | {s['ratio_to_prior_forward'][k]:.1f} |")
    if result["e2e"]:
        def fmt(r: dict, key: str, spec: str) -> str:
            value = r.get(key)
            return "-" if value is None else format(value, spec)

        print("\n| prompt | first run s | cached re-run s | IoU, all views (ring + top + bottom) | volumetric IoU | "
              "Chamfer | normal error deg | roughness deg | IoU (8-view ring) | colour | dE | saturation excess |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in result["e2e"]:
            r = {**r, "iou_all_views": r.get("iou_all_views", r.get("iou_mean"))}  # results saved before the rename
            print(f"| {r['prompt']} | {r['first_s']:.0f} | {r['cached_s']:.2f} | {fmt(r, 'iou_all_views', '.3f')} | "
                  f"{fmt(r, 'volume_iou', '.3f')} | {fmt(r, 'chamfer', '.3f')} | {fmt(r, 'normal_error_deg', '.1f')} | "
                  f"{fmt(r, 'roughness_deg', '.1f')} | {fmt(r, 'iou_ring_mean', '.3f')} | {r['colour_name']} | "
                  f"{r['colour_error_lab']:.1f} | {r['saturation_excess']:.3f} |")


if __name__ == "__main__":
    main()
