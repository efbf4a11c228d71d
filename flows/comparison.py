"""Method comparison and guidance-sweep reports WITHOUT importing Prefect: the items and their report
(flows/compare.py holds the Prefect flows, flows/launch.py the entry points the CLI calls).

    compare: every (prompt of a file, method, seed) -> an asset under OUT/runs/<name>/ (cached stages reused), then
        OUT/index.html + OUT/report.md + OUT/metrics.json (distill3d.report.write_report): per prompt the methods'
        turntables and views side by side and the evaluate stage's metrics table; OUT/summary.json (every item's
        status, reason, seconds).
    sweep (DreamFusion Fig. 9): every (guidance scale, seed) of one prompt -> an asset (a cached generate with
        `nerf_sds.guidance.guidance_scale` set), then OUT/sweep_grid.png (front view of each asset's views.png;
        seeds in rows, scales in columns), OUT/sweep_plot.png (saturation and IoU against guidance), OUT/sweep.json
        (per point and per scale) and the report page around them.

As with `distill3d batch` (flows/jobs.py's `prepare` does the planning), a run whose items are all in the store
never starts Prefect; otherwise flows/compare.py's `compare` / `sweep` flow runs the missing ones through
flows/batch.py's `run_pending` (a `generate-asset` subflow each) and publishes the report's tables as a Prefect
markdown artifact. A bad item (unknown word, invalid override) fails alone: the report lists it without images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distill3d.report.gallery import SUCCESS
from flows.jobs import Defaults, prepare, summarise
from flows.methods import get_method, methods as registered_methods
from flows.prompts_source import PromptRow, read_prompts, slug
from stages.core.protocol import StageError

RUNS = "runs"  # OUT/runs/<name>/: the assembled assets (the report copies their images under OUT/assets/)



def check_methods(methods: Sequence[str]) -> list[str]:
    methods = [m.strip() for m in methods if m.strip()]
    if not methods:
        raise StageError("no methods given, e.g. --methods dreamfusion,textmesh")
    unknown = [m for m in methods if m not in known_methods()]
    if unknown:
        raise StageError(f"unknown method(s) {unknown}; known: {', '.join(known_methods())}")
    return list(dict.fromkeys(methods))


def known_methods() -> list[str]:
    return list(registered_methods())


def method_params(method: str, params: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """The sections of `params` ({stage: {dotted.key: value}}) that are stages of `method`: a comparison's
    overrides apply to each method where they make sense (nerf_sds.* to dreamfusion, sdf_nerf.* to textmesh)."""
    return {k: dict(v) for k, v in (params or {}).items() if k in get_method(method).sections}


def check_sections(methods: Sequence[str], params: Mapping[str, Any] | None) -> None:
    stages = {s for m in methods for s in get_method(m).sections}
    unknown = sorted(set(params or {}) - stages)
    if unknown:
        raise StageError(f"params for unknown stage(s) {unknown}; {', '.join(methods)} have {sorted(stages)}")


def compare_rows(prompts: str | Path, methods: Sequence[str], seeds: Sequence[int],
                 params: Mapping[str, Mapping[str, Any]] | None = None) -> list[PromptRow]:
    """One row per (prompt of the file, method, seed), prompt-major. `params` ({stage: {dotted.key: value}}) go to
    the methods that have the stage; a prompt line's own options (`| k=v`, flows/prompts_source.py) win, and
    method/seed/name are set by the comparison."""
    methods = check_methods(methods)
    check_sections(methods, params)
    if not seeds:
        raise StageError("no seeds given, e.g. --seeds 0,1")
    rows: list[PromptRow] = []
    seen: dict[str, int] = {}
    for src in read_prompts(prompts):
        base = slug(src.prompt, 40)
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1:
            base = f"{base}-{seen[base]}"
        for method in methods:
            for seed in seeds:
                overrides = method_params(method, params)
                for section, values in src.overrides.items():
                    overrides.setdefault(section, {}).update(values)
                rows.append(PromptRow(prompt=src.prompt, source=src.source, method=method, seed=int(seed),
                                      overrides=overrides,
                                      name=f"{base}-{method}-s{seed}", error=src.error))
    return rows


def sweep_rows(prompt: str, guidance_scales: Sequence[float], seeds: Sequence[int], method: str = "dreamfusion",
               params: Mapping[str, Mapping[str, Any]] | None = None) -> list[PromptRow]:
    """One row per (guidance scale, seed) of `prompt`: `params` plus the method's guidance scale set."""
    check_methods([method])
    check_sections([method], params)
    if not guidance_scales or not seeds:
        raise StageError("a sweep needs at least one guidance scale and one seed")
    bad = [g for g in guidance_scales if not (isinstance(g, (int, float)) and math.isfinite(g) and g > 0)]
    if bad:
        raise StageError(f"guidance scales must be positive numbers, not {bad}")
    spec = get_method(method)

    def overrides(g: float) -> dict[str, dict[str, Any]]:
        out = method_params(method, params)
        for section, values in spec.shortcut_overrides(guidance_scale=g).items():
            out.setdefault(section, {}).update(values)
        return out

    return [PromptRow(prompt=prompt, source=f"sweep w={float(g):g} s={int(s)}", method=method, seed=int(s),
                      overrides=overrides(float(g)), name=f"w{float(g):g}-s{int(s)}")
            for g in sorted({float(g) for g in guidance_scales}) for s in sorted({int(s) for s in seeds})]


def guidance_of(entry: Mapping[str, Any]) -> float:
    """The guidance scale of a sweep entry: its method's guidance param (the first, if it has several)."""
    section, _, key = get_method(entry["method"]).guidance_param[0].partition(".")
    return float(entry["params"][section][key])


def load_metrics(entry: Mapping[str, Any]) -> dict | None:
    """The evaluate stage's metrics the asset folder holds (None: failed, or not a toy-world prompt)."""
    if entry.get("status") not in SUCCESS:
        return None
    try:
        data = json.loads((Path(entry["out"]) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def report_entries(entries: Sequence[Mapping[str, Any]], label: Any = None) -> list[dict[str, Any]]:
    """write_report's entries: method (or `label(entry)`), prompt, seed, asset_dir, metrics, status, reason."""
    out = []
    for e in entries:
        ok = e.get("status") in SUCCESS
        out.append({"method": label(e) if label else e["method"], "prompt": e["prompt"], "seed": e["seed"],
                    "asset_dir": e["out"] if ok else None, "metrics": load_metrics(e), "status": e.get("status"),
                    "reason": e.get("reason")})
    return out


def front_view(asset_dir: str | Path):
    """The front (azimuth 0, shaded) tile of an asset's views.png as a uint8 (H, W, 3) array; None if absent."""
    import numpy as np
    from PIL import Image

    asset_dir = Path(asset_dir)
    path = asset_dir / "views.png"
    if not path.is_file():
        return None
    grid = np.asarray(Image.open(path).convert("RGB"))
    mpath = asset_dir / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.is_file() else {}
    export = ((manifest.get("stages") or {}).get("export_asset") or {}).get("params") or {}
    n_views, pad = int(export.get("views", 8)), 2  # distill3d.viz.asset_views: ncols=n_views, shaded row first
    size = (grid.shape[1] - (n_views + 1) * pad) // n_views
    return grid[pad : pad + size, pad : pad + size].copy()


def sweep_points(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """sweep_figure's points for the successful entries: guidance_scale, seed, image (front view), metrics."""
    points = []
    for e in entries:
        image = front_view(e["out"]) if e.get("status") in SUCCESS else None
        if image is not None:
            points.append({"guidance_scale": guidance_of(e), "seed": e["seed"], "image": image,
                           "metrics": load_metrics(e) or {}})
    return points


def sweep_summary(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{points: [{guidance_scale, seed, status, saturation, saturation_excess, iou_mean, volume_iou}], by_scale:
    [{guidance_scale, saturation, iou_mean, volume_iou} (means over seeds)], saturation: [per-scale means, ascending
    scale], monotonic: bool}. ``iou_mean`` is the silhouette IoU over all views (metrics' ``iou_all_views``),
    ``volume_iou`` the volumetric IoU (``volume.iou``)."""
    from distill3d.nested import lookup

    points = []
    for e in entries:
        m = load_metrics(e)
        points.append({"guidance_scale": guidance_of(e), "seed": e["seed"], "status": e.get("status"),
                       "saturation": lookup(m, "saturation.mean"),
                       "saturation_excess": lookup(m, "saturation.excess"),
                       "iou_mean": lookup(m, "iou_all_views"), "volume_iou": lookup(m, "volume.iou"),
                       "out": e["out"]})

    def mean(values: list) -> float | None:
        values = [float(v) for v in values if v is not None]
        return sum(values) / len(values) if values else None

    by_scale = []
    for g in sorted({p["guidance_scale"] for p in points}):
        here = [p for p in points if p["guidance_scale"] == g]
        by_scale.append({"guidance_scale": g, "saturation": mean([p["saturation"] for p in here]),
                         "iou_mean": mean([p["iou_mean"] for p in here]),
                         "volume_iou": mean([p["volume_iou"] for p in here])})
    sat = [s["saturation"] for s in by_scale]
    known = [s for s in sat if s is not None]
    monotonic = len(known) == len(sat) and all(a <= b for a, b in zip(known, known[1:]))
    return {"points": points, "by_scale": by_scale, "saturation": sat, "saturation_monotonic_increasing": monotonic}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def finish_compare(entries: list[dict], out_dir: Path, title: str) -> dict[str, Any]:
    """Write the comparison report for finished entries; returns the result dict (no Prefect)."""
    from distill3d.report.html import write_report

    page = write_report(report_entries(entries), out_dir, title=title)
    _write_json(out_dir / "summary.json", entries)
    return summarise(entries, page, "report")


def finish_sweep(entries: list[dict], out_dir: Path, title: str) -> dict[str, Any]:
    """Write the sweep figure (grid + plot), out_dir/sweep.json and the report page around them (no Prefect)."""
    from distill3d.report.html import write_report
    from distill3d.report.sweep import sweep_figure

    points = sweep_points(entries)
    figures = []
    if points:
        paths = sweep_figure(points, out_dir, title=title)
        figures = [("final renders: seeds in rows, guidance scales in columns", paths["grid"]),
                   ("saturation and silhouette IoU against guidance scale", paths["plot"])]
    label = lambda e: f"{e['method']} w={guidance_of(e):g}"  # noqa: E731
    page = write_report(report_entries(entries, label), out_dir, title=title, figures=figures)
    summary = sweep_summary(entries)
    summary.update(grid=str(out_dir / "sweep_grid.png") if points else None,
                   plot=str(out_dir / "sweep_plot.png") if points else None)
    _write_json(out_dir / "sweep.json", summary)
    _write_json(out_dir / "summary.json", entries)
    return {**summarise(entries, page, "report"), "sweep": summary}


def prepare_items(rows: list[PromptRow], out_dir: Path, defaults: Defaults) -> tuple[list[dict], list[dict]]:
    """flows/jobs.py's `prepare` into out_dir/runs: (entries, entries still to run). Each row carries its own
    method, seed and params; `defaults` gives the rest (input folders, device, params file)."""
    return prepare(rows, out_dir / RUNS, defaults)
