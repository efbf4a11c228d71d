"""Stage `comparison`: the project's main result: every method on every default prompt side by side, the guidance
sweeps (DreamFusion's Figure 9, SDS against VSD) and the Janus runs, and the seed's claims judged from their
metrics (distill3d.report.claims), as an offline report.

Input `results`: the pipeline's data folder (data/<method>/{asset,metrics}/<prompt>, data/runs/<run>/{asset,metrics}
/<point>, and each chain's stage outputs with their manifests). Params: the report's title and the runs of
params.yaml's `comparison.runs` (stages/shared/runs.py), read back through the same expansion the dvc.yaml
generator used. A method with no result for a prompt is a row with the reason (its outputs missing), not a failure.

Output: index.html (turntables and 3D views side by side per prompt, the per-method summary, the claims table, the
sweep figures), methods.png (each method's assets from the front and the back), report.md, claims.json, claims.md
(the table README.md carries), summary.json, metrics.json (the summary flattened: what `dvc metrics show` and
`dvc exp show` compare).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from distill3d.report.table import HEADLINE_METRICS
from stages.core.protocol import StageParams
from stages.shared.runs import RunSpec, points

NAME = "comparison"
INPUTS = ("results",)
ROLES_SKIPPED = ("runs", "comparison", "prior_checks")
# The per-method summary: (column, metrics path); means over the method's default-prompt assets.
SUMMARY = tuple((label, path) for _, path, label in HEADLINE_METRICS) + (
    ("stripe energy / GT", "sharpness.stripe_energy_ratio"), ("Janus rate", "janus.rate"),
    ("saturation excess", "saturation.excess"))


class Params(StageParams):
    title: str = "distill3d: five methods on the same prompts"
    runs: dict[str, RunSpec] = Field(default_factory=dict)


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def chain_seconds(results: Path, root: str, name: str) -> float | None:
    """Seconds of the stage outputs data/<root>/<role>/<name> (their manifests; stages a chain shares with
    another method's, e.g. Magic3D's coarse NeRF, are counted where they live)."""
    total, found = 0.0, False
    for role in sorted((results / root).glob("*")):
        manifest = _json(role / name / "manifest.json") if role.is_dir() else None
        if manifest and isinstance(manifest.get("seconds"), (int, float)):
            total, found = total + float(manifest["seconds"]), True
    return round(total, 1) if found else None


def gather(results: Path, runs: dict[str, RunSpec]) -> dict[str, Any]:
    """{methods: {method: {prompt name: {metrics, asset, seconds}}}, runs: {run: [{point, value, seed, metrics,
    asset}]}} from the data folder."""
    methods: dict[str, dict[str, Any]] = {}
    for method_dir in sorted(p for p in results.iterdir() if p.is_dir() and p.name not in ROLES_SKIPPED):
        metrics_dir = method_dir / "metrics"
        names = sorted({p.stem for p in metrics_dir.glob("*.json")} | {p.name for p in (method_dir / "asset").glob("*")
                                                                         if p.is_dir()})
        if not names:
            continue
        methods[method_dir.name] = {
            n: {"metrics": _json(metrics_dir / f"{n}.json"), "asset": str(method_dir / "asset" / n),
                "seconds": chain_seconds(results, method_dir.name, n)} for n in names}
    found_runs = {}
    for run, spec in runs.items():
        found_runs[run] = [{"point": p.name, "value": p.value, "seed": p.seed, "evidence": spec.evidence,
                            "method": spec.method, **point_result(results, run, spec, p)} for p in points(spec)]
    return {"methods": methods, "runs": found_runs}


def point_result(results: Path, run: str, spec: RunSpec, point) -> dict[str, Any]:
    """A run point's metrics and asset: data/runs/<run>/{metrics,asset}/<point>, or, for a point that is the
    method's own chain (seed 0, no overrides: dvc.yaml makes that computation once, as the method's), the method's
    data/<method>/{metrics,asset}/<prompt>."""
    own = results / "runs" / run
    if not (own / "metrics" / f"{point.name}.json").is_file() and point.seed == 0 and not point.overrides:
        return {"metrics": _json(results / spec.method / "metrics" / f"{spec.prompt}.json"),
                "asset": str(results / spec.method / "asset" / spec.prompt)}
    return {"metrics": _json(own / "metrics" / f"{point.name}.json"), "asset": str(own / "asset" / point.name)}


def evidence(data: dict[str, Any], sds_seed_distances: dict[float, float] | None = None):
    """The claims' Evidence (distill3d.report.claims) from ``gather``'s data; the SDS seeds' render distances are
    measured on the assets (``seed_diversity``) unless given (``committed_seed_diversity``: the assets are DVC
    outputs, absent from a clone that has only git's files)."""
    from distill3d.report.claims import Evidence

    ev = Evidence()
    for method, by_prompt in data["methods"].items():
        ev.methods[method] = [r["metrics"] for r in by_prompt.values() if r["metrics"]]
        ev.seconds[method] = [r["seconds"] for r in by_prompt.values() if r["seconds"] is not None]
    janus_groups = {"janus_no_view_prompts": "dreamfusion_no_view_prompts", "janus_view_prompts": "dreamfusion",
                    "janus_multiview": "mvdream"}
    for rows in data["runs"].values():
        for r in rows:
            if not r["metrics"]:
                continue
            if r["evidence"] in ("sds", "vsd") and r["value"] is not None:
                ev.sweeps.setdefault(r["evidence"], {}).setdefault(float(r["value"]), []).append(r["metrics"])
                if r["evidence"] == "vsd" and isinstance(r["metrics"].get("diversity"), (int, float)):
                    ev.diversity.setdefault("vsd", {}).setdefault(float(r["value"]), []).append(
                        float(r["metrics"]["diversity"]))
            elif r["evidence"] in janus_groups:
                ev.janus.setdefault(janus_groups[r["evidence"]], []).append(r["metrics"])
    if sds_seed_distances is None:
        sds_seed_distances = seed_diversity(data, "sds")
    for scale, distance in sds_seed_distances.items():
        ev.diversity.setdefault("sds", {})[scale] = [distance]
    return ev


def seed_diversity(data: dict[str, Any], kind: str) -> dict[float, float]:
    """{guidance scale: mean pairwise render distance between the assets of different seeds} of the `kind` sweep
    points (distill3d.metrics.diversity: the measure evaluate applies to ProlificDreamer's particles)."""
    from distill3d.metrics.diversity import mean_pairwise_distance
    from distill3d.metrics.suite import load_asset

    by_scale: dict[float, dict[int, Path]] = {}
    for rows in data["runs"].values():
        for r in rows:
            asset = Path(r["asset"])
            if r["evidence"] == kind and r["value"] is not None and (asset / "mesh.glb").is_file():
                by_scale.setdefault(float(r["value"]), {})[r["seed"]] = asset
    return {w: mean_pairwise_distance([load_asset(a) for a in assets.values()])
            for w, assets in sorted(by_scale.items()) if len(assets) > 1}


SEED_DIVERSITY = "seed_diversity.sds."  # metrics.json keys: SEED_DIVERSITY + guidance scale


def committed_seed_diversity(summary: Path) -> dict[float, float]:
    """{guidance scale: SDS seed distance} as the comparison stage wrote them to its metrics file (the committed
    data/comparison_summary.json); empty when there is none."""
    flat = _json(summary) or {}
    return {float(k.removeprefix(SEED_DIVERSITY)): float(v) for k, v in flat.items()
            if k.startswith(SEED_DIVERSITY) and isinstance(v, (int, float))}


def _mean(values: list) -> float | None:
    values = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(values) / len(values) if values else None


def summary(data: dict[str, Any], ev) -> dict[str, dict[str, float | None]]:
    """{method: {metric path: mean over its default-prompt assets, "seconds": mean seconds per asset}}."""
    from distill3d.report.claims import mean_of

    out = {}
    for method, metrics in ev.methods.items():
        out[method] = {path: mean_of(metrics, path) for _, path in SUMMARY}
        out[method]["seconds"] = _mean(ev.seconds.get(method, []))
    return out


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    from distill3d.nested import lookup
    from distill3d.report.claims import claims_markdown, judge
    from distill3d.report.html import write_report
    from distill3d.report.side_by_side import methods_figure
    from distill3d.report.sweep import sweep_figure
    from distill3d.report.table import format_value

    results = Path(inputs["results"])
    data = gather(results, params.runs)
    ev = evidence(data)
    claims = judge(ev)
    table = summary(data, ev)
    entries, failures = [], []
    prompts = sorted({n for by_prompt in data["methods"].values() for n in by_prompt})
    for name in prompts:
        for method, by_prompt in data["methods"].items():
            r = by_prompt.get(name)
            m = (r or {}).get("metrics")
            if r is None or m is None or not (Path(r["asset"]) / "mesh.glb").is_file():
                failures.append([name, method, "no asset or metrics: the chain did not finish (see dvc repro)"])
                continue
            entries.append({"method": method, "prompt": m.get("prompt", name), "seed": 0, "asset_dir": r["asset"],
                            "metrics": m})
    figures = []
    side = methods_figure({m: {n: Path(r["asset"]) for n, r in by.items()} for m, by in data["methods"].items()},
                          out / "methods.png")
    if side is not None:
        figures.append(("Each method (rows) on each prompt: turntable from the front and from the back", side))
    for kind in ("sds", "vsd"):
        pts = [{"guidance_scale": r["value"], "seed": r["seed"], "image": Path(r["asset"]) / "views.png",
                "metrics": r["metrics"]} for rows in data["runs"].values() for r in rows
               if r["evidence"] == kind and r["metrics"] and (Path(r["asset"]) / "views.png").is_file()]
        if pts:
            paths = sweep_figure(pts, out / f"sweep_{kind}", title=f"{kind.upper()} guidance sweep")
            figures += [(f"{kind.upper()}: final renders, seeds in rows, guidance scales in columns", paths["grid"]),
                        (f"{kind.upper()}: saturation and IoU against guidance scale", paths["plot"])]
    sections = [
        ("Claims of the seed, judged from the metrics", ["claim", "verdict", "the numbers"],
         [[c.text, c.verdict, c.evidence] for c in claims]),
        ("Per method: means over the default prompts", ["method"] + [c for c, _ in SUMMARY] + ["seconds / asset"],
         [[m] + [format_value(v[p]) for _, p in SUMMARY] + [format_value(v["seconds"])] for m, v in table.items()]),
    ]
    if failures:
        sections.append(("Missing results", ["prompt", "method", "reason"], failures))
    write_report(entries, out, title=params.title, figures=figures, sections=sections)
    (out / "claims.json").write_text(json.dumps([c.to_dict() for c in claims], indent=2, default=str))
    (out / "claims.md").write_text(claims_markdown(claims))
    (out / "summary.json").write_text(json.dumps({"methods": table, "runs": {
        run: [{k: r[k] for k in ("point", "value", "seed", "evidence")} | {
            "iou_all_views": lookup(r["metrics"], "iou_all_views"),
            "saturation_excess": lookup(r["metrics"], "saturation.excess"),
            "janus_rate": lookup(r["metrics"], "janus.rate")} for r in rows] for run, rows in data["runs"].items()}},
        indent=2, default=str))
    flat = {f"{m}.{path}": v for m, row in table.items() for path, v in row.items() if v is not None}
    flat.update({f"claim.{c.key}": c.verdict for c in claims})
    flat.update({f"{SEED_DIVERSITY}{w:g}": d[0] for w, d in ev.diversity.get("sds", {}).items()})
    (out / "metrics.json").write_text(json.dumps(flat, indent=2, sort_keys=True))
    return {"claims": {c.key: c.verdict for c in claims}, "methods": sorted(table), "missing": len(failures)}
