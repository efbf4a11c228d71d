"""The Janus study (MVDream's claim): on face prompts no test uses, over 3 seeds, how often DreamFusion without
view-dependent prompts, DreamFusion with them, and MVDream draw a face where it does not belong.

    python benchmarks/bench_janus.py [--out /tmp/janus] [--seeds 0,1,2] [--concurrency 2] [--groups mvdream]

Each group repeats one of the make-run Janus runs (params.yaml `comparison.runs`: its method and overrides, the
settings under which SDS draws a face at all in the toy world) on this study's prompts and seeds: at the defaults no
method draws a face (albedo is shown in 20 % of steps, and lambertian / textureless shading lets the field
explain the dark features away; measured on "an orange sphere with a face": guidance 5 / 20 / 100 and the latent
prior: no face; albedo-only at guidance 20: the face in 2 of 3 front views, none behind). A Janus rate of 0 means
something only beside the front-face rate: the share of front views where the face is found.

Each group is one `distill3d compare` into OUT/<group>; this script then reads every asset's metrics (the toy world's
face detector, distill3d/metrics/janus.py), writes benchmarks/results/janus.json and docs/figures/janus.png (each
group's assets from the front and the back) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mdtable import MarkdownTable, save_json  # noqa: E402
from stages.core.params import read_params_file  # noqa: E402
from stages.shared.runs import RunSpec  # noqa: E402

PROMPTS = ("a purple sphere with a face", "a yellow cube with a face")
# {group: the make-run Janus run (params.yaml comparison.runs) whose method and overrides the group repeats}
GROUPS = {"dreamfusion_no_view_prompts": "janus_no_view", "dreamfusion": "janus_view", "mvdream": "janus_mv"}


def group_specs() -> dict[str, RunSpec]:
    runs = read_params_file(ROOT / "params.yaml")["comparison"]["runs"]
    return {group: RunSpec.model_validate(runs[run]) for group, run in GROUPS.items()}


def run_group(group: str, spec: RunSpec, out: Path, seeds: str, concurrency: int) -> None:
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    cmd = [sys.executable, "-m", "flows.cli", "compare", "--prompts", str(prompts), "--out", str(out / group),
           "--methods", spec.method, "--seeds", seeds, "--concurrency", str(concurrency), "--title", f"Janus: {group}"]
    for key, value in spec.set.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    subprocess.run(cmd, cwd=ROOT, check=True)


def asset_row(metrics: dict) -> dict:
    """Janus rate, front-face rate (the claims table's own measure) and the headline metrics of one asset."""
    from distill3d.report.claims import front_face_rate

    return {"janus_rate": metrics["janus"]["rate"], "front_face_rate": front_face_rate(metrics),
            "iou_all_views": metrics["iou_all_views"], "colour_error_lab": metrics["colour_error_lab"]}


def collect(out: Path) -> dict[str, list[dict]]:
    """{group: rows} from each compare's summary.json (its finished items: prompt, seed, asset folder)."""
    rows: dict[str, list[dict]] = {}
    for group in GROUPS:
        for item in json.loads((out / group / "summary.json").read_text()):
            if item["status"] in ("ok", "cached"):
                metrics = json.loads((Path(item["out"]) / "metrics.json").read_text())
                rows.setdefault(group, []).append({"prompt": item["prompt"], "seed": item["seed"],
                                                   "asset": item["out"], **asset_row(metrics)})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/janus_study"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="only read OUT's finished assets")
    parser.add_argument("--groups", default=",".join(GROUPS),
                        help="the groups to run (the report reads every group finished in OUT), e.g. mvdream after a "
                             "change that leaves the others' results as they are")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    specs = group_specs()
    if not args.report_only:
        chosen = args.groups.split(",")
        unknown = set(chosen) - set(specs)
        if unknown:
            parser.error(f"unknown groups {sorted(unknown)}: choose from {', '.join(specs)}")
        for group in chosen:
            run_group(group, specs[group], args.out, args.seeds, args.concurrency)
    rows = collect(args.out)
    table = MarkdownTable(("group", "s"), ("assets", "d"), ("Janus rate", ".3f"), ("face in front views", ".3f"),
                          ("all-view IoU", ".3f"), ("colour error", ".1f"))
    summary = {}
    for group, items in rows.items():
        summary[group] = {k: statistics.fmean(r[k] for r in items)
                          for k in ("janus_rate", "front_face_rate", "iou_all_views", "colour_error_lab")}
        table.row(group, len(items), *summary[group].values())
    save_json(ROOT / "benchmarks" / "results" / "janus.json",
              {"prompts": list(PROMPTS), "seeds": args.seeds,
               "groups": {g: {"run": GROUPS[g], "method": spec.method, "set": spec.set} for g, spec in specs.items()},
               "summary": summary,
               "assets": {g: [{k: v for k, v in r.items() if k != "asset"} for r in items]
                          for g, items in rows.items()}})
    from distill3d.report.side_by_side import methods_figure

    figure = methods_figure({g: {f"{r['prompt']} s{r['seed']}": Path(r["asset"]) for r in items}
                             for g, items in rows.items()}, ROOT / "docs" / "figures" / "janus.png")
    print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
