"""The DVC pipeline's report: one method's assets + metrics for the default prompts -> an offline page.

Inputs: `assets` (a folder of asset folders, data/<method>/asset/<name>/ with turntable.gif and views.png) and
`metrics` (a folder of the evaluate stage's files, data/<method>/metrics/<name>.json). Output: index.html,
report.md, entries.json (every asset's metrics, as write_report's metrics.json) and metrics.json: a flat summary
(per prompt name and the mean over prompts of ``SUMMARY_KEYS``: silhouette IoU over all views (ring + top + bottom),
volumetric IoU, Chamfer distance (world units), CIELAB colour error, normal error and roughness (degrees), ring-only
IoU, saturation, saturation excess) that
`dvc metrics show` reads (`python -m stages report ... --out data/<method>/report_summary.json` writes just that
file). No Prefect: this is what `dvc repro report@<method>` runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from distill3d.report.table import HEADLINE_METRICS
from stages.core.protocol import StageError, StageParams

NAME = "report"
INPUTS = ("assets", "metrics")
# (summary key, dotted path into an evaluate metrics.json): geometry first, the all-view silhouette IoU the headline.
SUMMARY_KEYS = tuple((key, path) for key, path, _ in HEADLINE_METRICS) + (
    ("iou_ring_mean", "iou_ring_mean"), ("saturation", "saturation.mean"), ("saturation_excess", "saturation.excess"))


class Params(StageParams):
    title: str = "distill3d: default prompts"
    method: str = "dreamfusion"  # the label of the assets in the report
    names: list[str] = Field(default_factory=list)  # asset names to include (default: every folder of `assets`)


def _names(params: Params, assets: Path) -> list[str]:
    names = params.names or sorted(p.name for p in assets.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise StageError(f"report: no assets in {assets}")
    return names


def check(params: Params, inputs: dict[str, Path]) -> None:
    assets = Path(inputs["assets"])
    if not assets.is_dir():
        raise StageError(f"report: assets folder {assets} not found")
    missing = [n for n in _names(params, assets) if not (assets / n).is_dir()]
    if missing:
        raise StageError(f"report: no asset folder for {missing} in {assets}")


def run(params: Params, inputs: dict[str, Path], out: Path) -> dict:
    from distill3d.nested import lookup
    from distill3d.report.html import write_report

    assets, metrics_dir = Path(inputs["assets"]), Path(inputs["metrics"])
    entries, summary = [], {}
    for name in _names(params, assets):
        path = metrics_dir / f"{name}.json"
        metrics = json.loads(path.read_text()) if path.is_file() else None
        prompt = (metrics or {}).get("prompt") or name
        entries.append({"method": params.method, "prompt": prompt, "seed": None, "asset_dir": assets / name,
                        "metrics": metrics})
        summary[name] = {k: lookup(metrics, dotted) for k, dotted in SUMMARY_KEYS}
    write_report(entries, out, title=params.title)
    (out / "metrics.json").replace(out / "entries.json")
    means = {}
    for key, _ in SUMMARY_KEYS:
        values = [float(v[key]) for v in summary.values() if isinstance(v.get(key), (int, float))]
        means[key] = sum(values) / len(values) if values else None
    result = {"mean": means, "prompts": summary, "count": len(entries)}
    (out / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return {"count": len(entries), **{f"mean_{k}": v for k, v in means.items()}}
