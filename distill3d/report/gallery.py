"""The batch gallery: an offline HTML index of a batch's assets, and the same summary as Markdown and JSON.

    out/index.html     a card per asset (its turntable as thumbnail, links to mesh.glb, turntable.gif, views.png,
                       manifest.json, metrics.json) and a table of failed prompts with their one-line reasons
    out/summary.json   [{name, prompt, method, seed, source, status, reason, seconds, cached, out}, ...]
    out/<name>/        each asset (written by the per-prompt flow); links are relative, nothing is fetched

`status` is "ok" (generated now), "cached" (already complete, nothing ran) or "failed". Writing is atomic per file
(temp + rename), so a reader never sees half a page. The comparison report (html.py) is the other page the project
writes; both live here in distill3d.report.

Each card with a mesh.glb also gets an interactive 3D view, exactly as in the comparison report (see html.py's
docstring): the viewer bundle is copied to out/viewer/, each GLB's base64 to out/viewer/glb/<k>-<name>.js (so the
page works from file://), or, without the viewer installed, a note saying so.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distill3d.nested import lookup
from distill3d.report.html import (
    ASSET_MESH,
    VIEWER_CSS,
    VIEWER_MISSING,
    copy_viewer,
    slug,
    viewer_element,
    viewer_scripts,
    write_glb_data,
)
from distill3d.report.table import format_value

LINKS = ("mesh.glb", "turntable.gif", "views.png", "metrics.json", "manifest.json")
METRICS = (("IoU all views", "iou_all_views"), ("vol. IoU", "volume.iou"), ("Chamfer", "chamfer.chamfer"),
           ("ΔE Lab", "colour_error_lab"), ("colour ok", "colour_correct"), ("normal err °", "normals.error_deg"))
SUCCESS = ("ok", "cached")

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { width: 220px; padding: .5em; border: 1px solid #ddd; border-radius: 4px; }
.card img { display: block; width: 200px; height: 200px; object-fit: contain; image-rendering: pixelated; }
.card h3 { font-size: 1em; margin: .3em 0; }
.card .meta, .card .links { font-size: .85em; color: #555; }
.card .links a { margin-right: .4em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
.failed td.reason { color: #a00; font-family: monospace; }
.card model-viewer { width: 200px; height: 200px; }
.card .missing { color: #a00; font-size: .85em; }
"""


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _metrics(asset: Path) -> dict | None:
    try:
        return json.loads((asset / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def _view_3d(entry: Mapping[str, Any], index: int, out_dir: Path, viewer_rel: str | None) -> str:
    """The card's 3D view of <name>/mesh.glb (its data script written under out/viewer/glb/), or a note."""
    name = str(entry["name"])
    glb = out_dir / name / ASSET_MESH
    if not glb.is_file():
        return ""
    if viewer_rel is None:
        return f'<p class="missing no-viewer">{html.escape(VIEWER_MISSING)}</p>'
    glb_rel, js_rel = f"{name}/{ASSET_MESH}", f"viewer/glb/{index:03d}-{slug(name)}.js"
    write_glb_data(glb, out_dir, glb_rel, js_rel)
    return viewer_element(glb_rel, js_rel, str(entry["prompt"]))


def _card(entry: Mapping[str, Any], out_dir: Path, view_3d: str = "") -> str:
    esc = html.escape
    name = str(entry["name"])
    asset = out_dir / name
    thumb = next((f for f in ("turntable.gif", "views.png") if (asset / f).is_file()), None)
    img = (f'<a href="{esc(name)}/views.png"><img src="{esc(name)}/{thumb}" alt="{esc(entry["prompt"])}"></a>'
           if thumb else '<p class="missing">no image</p>')
    links = " ".join(f'<a href="{esc(name)}/{f}">{f.split(".")[0] if f != "mesh.glb" else "GLB"}</a>'
                     for f in LINKS if (asset / f).is_file())
    metrics = _metrics(asset)
    shown = [f"{label} {format_value(lookup(metrics, path))}" for label, path in METRICS
             if lookup(metrics, path) is not None]
    meta = f"{esc(str(entry.get('method')))}, seed {esc(str(entry.get('seed')))}, {esc(str(entry['status']))}"
    if entry.get("seconds") is not None:
        meta += f", {float(entry['seconds']):.1f} s"
    return (f'<div class="card" data-status="{esc(str(entry["status"]))}" data-name="{esc(name)}">{img}{view_3d}'
            f'<h3>{esc(str(entry["prompt"]))}</h3><p class="meta">{meta}</p>'
            + (f'<p class="meta">{esc("; ".join(shown))}</p>' if shown else "")
            + f'<p class="links">{links}</p></div>')


def summary_markdown(entries: Sequence[Mapping[str, Any]], title: str = "batch") -> str:
    """A Markdown table of every prompt's outcome (for the Prefect artifact)."""
    ok = sum(e["status"] in SUCCESS for e in entries)
    lines = [f"## {title}", "", f"{ok} of {len(entries)} prompts succeeded, {len(entries) - ok} failed.", "",
             "| # | prompt | method | seed | status | seconds | output / reason |", "|---|---|---|---|---|---|---|"]
    for i, e in enumerate(entries, 1):
        detail = e.get("reason") if e["status"] not in SUCCESS else f"`{e.get('out')}`"
        detail = str(detail or "").replace("|", "\\|")
        secs = "" if e.get("seconds") is None else f"{float(e['seconds']):.1f}"
        prompt = str(e["prompt"]).replace("|", "\\|")
        lines.append(f"| {i} | {prompt} | {e.get('method')} | {e.get('seed')} "
                     f"| {e['status']} | {secs} | {detail} |")
    return "\n".join(lines) + "\n"


def write_gallery(entries: Sequence[Mapping[str, Any]], out_dir: str | Path, title: str = "distill3d batch",
                  viewer: str | Path | bool | None = None) -> Path:
    """Write `out_dir/index.html` and `out_dir/summary.json` for the batch's entries; return the HTML path.

    entries: mappings with name, prompt, method, seed, source, status ("ok" | "cached" | "failed"), reason (for
    failures), seconds, out. Successful entries' assets are expected at `out_dir/<name>/`. viewer: the 3D viewer
    bundle, as ``html.write_report``'s (None: the installed one, False: none).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    esc = html.escape
    good = [e for e in entries if e["status"] in SUCCESS]
    bad = [e for e in entries if e["status"] not in SUCCESS]
    has_mesh = any((out_dir / str(e["name"]) / ASSET_MESH).is_file() for e in good)
    viewer_rel = copy_viewer(out_dir, viewer) if has_mesh else None
    body = [f"<h1>{esc(title)}</h1>",
            f'<p id="counts" data-ok="{len(good)}" data-failed="{len(bad)}">{len(good)} of {len(entries)} prompts '
            f"succeeded, {len(bad)} failed.</p>",
            '<div class="cards">', *(_card(e, out_dir, _view_3d(e, k, out_dir, viewer_rel))
                                     for k, e in enumerate(good)), "</div>"]
    if bad:
        body += ['<h2>Failures</h2><table class="failed"><thead><tr><th>prompt</th><th>source</th><th>method</th>'
                 "<th>reason</th></tr></thead><tbody>"]
        body += [f'<tr data-name="{esc(str(e["name"]))}"><td>{esc(str(e["prompt"]))}</td>'
                 f'<td>{esc(str(e.get("source", "")))}</td><td>{esc(str(e.get("method")))}</td>'
                 f'<td class="reason">{esc(str(e.get("reason") or "unknown error"))}</td></tr>' for e in bad]
        body.append("</tbody></table>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_CSS}{VIEWER_CSS}</style></head>\n<body>\n" + "\n".join(body)
            + f"\n{viewer_scripts(viewer_rel)}</body></html>\n")
    _write_atomic(out_dir / "summary.json", json.dumps(list(entries), indent=2, default=str) + "\n")
    _write_atomic(out_dir / "index.html", page)
    return out_dir / "index.html"
