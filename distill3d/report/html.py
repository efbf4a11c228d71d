"""The comparison report: a static, offline HTML page and the same as Markdown.

Per prompt: each method's (and seed's) turntable GIF, view grid and an interactive 3D view of its ``mesh.glb``
side by side, then the metrics table (``table.METRIC_COLUMNS``). Images and meshes are copied beside the page
(relative links; nothing is fetched from the network, no CDN), so the folder can be zipped, served or opened from
disk. A small inline script marks, once the page has loaded, how many images it holds and which failed to load:
``<body data-images-total="N" data-images-broken='["src", ...]'>`` (what the browser test reads).

The 3D view (also used by the batch gallery, ``gallery.py``) is Google's ``<model-viewer>`` web component, installed
by ``make setup`` with npm into ``tools/viewer/`` (``@google/model-viewer``, pinned in its package-lock.json). Its
self-contained UMD bundle (three.js and lit inside, ~1 MB) is copied to ``viewer/model-viewer-umd.min.js`` beside the
page and loaded as a *classic* script: Chromium refuses ES-module scripts from a file:// page (origin "null", CORS),
classic scripts load from disk. ``DISTILL3D_VIEWER_JS`` points at another copy of the bundle ("" turns the 3D views
off); without a bundle the page says "3D view unavailable" per asset and links the GLB, nothing fails.

How the GLB reaches the viewer offline: a file:// page may not ``fetch()`` or XHR another file:// URL in Chromium
(and three.js loads models with fetch), so a plain ``src="mesh.glb"`` works over http only. Each ``mesh.glb`` is
therefore copied beside the page *and* written as ``mesh.glb.js``, a classic script that puts the GLB's base64 into
``window.distill3dGlb[<glb path>]``. The page script injects that script when the viewer comes near the viewport,
decodes it into a Blob and gives the viewer a ``blob:`` URL; this works the same from file://, from an unzipped
folder and from any http server, with no browser flag. The GLB's data costs 4/3 of its size again on disk.

The same script reports the viewers' state for tests: ``<body data-viewers-total="N" data-viewers-loaded="K"
data-viewers-failed='["<glb>: <why>", ...]'>``, and on each ``<model-viewer>`` ``data-state`` (loading, loaded,
error), ``data-error`` and, once it has drawn its model, ``data-pixels`` / ``data-pixels-total``: how many pixels of
a snapshot of its canvas (``toDataURL``; the background is transparent) the model covers. A viewer loads its model
only once it is on screen (model-viewer's lazy loading), so a long page's lower viewers report when scrolled to.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distill3d.report.table import METRIC_COLUMNS, markdown_table, row_values

ASSET_IMAGES = (("turntable.gif", "turntable"), ("views.png", "views"))
ASSET_MESH = "mesh.glb"

VIEWER_ENV = "DISTILL3D_VIEWER_JS"
VIEWER_PACKAGE = Path(__file__).resolve().parents[2] / "tools" / "viewer" / "node_modules" / "@google" / "model-viewer"
VIEWER_BUNDLE = "dist/model-viewer-umd.min.js"
VIEWER_REL = "viewer/model-viewer-umd.min.js"
VIEWER_MISSING = "3D view unavailable: no viewer (tools/viewer, installed by make setup) when this page was written"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.assets { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; padding: .5em; border: 1px solid #ddd; border-radius: 4px; }
figure img { display: block; max-width: 100%; image-rendering: pixelated; margin-bottom: .3em; }
img.turntable { width: 256px; height: auto; }
img.views { width: 512px; height: auto; }
.missing { color: #a00; }
table.metrics { border-collapse: collapse; margin: 1em 0 2em; }
table.metrics th, table.metrics td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
table.metrics td:first-child, table.metrics th:first-child { text-align: left; }
"""

_CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); })
                   .map(function (im) { return im.getAttribute('src'); });
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-broken', JSON.stringify(broken));
});
"""

VIEWER_CSS = """
model-viewer { display: block; width: 256px; height: 256px; background: #fff; border: 1px solid #eee;
               --poster-color: transparent; }
.viewer-note { font-size: .85em; color: #555; margin: .2em 0; }
.pair { display: flex; flex-wrap: wrap; gap: .5em; align-items: flex-start; }
.view3d { max-width: 256px; }
"""

# The 3D views' loader and self-check (see the module docstring). ES5, no network: data scripts are siblings.
VIEWER_SCRIPT = r"""
(function () {
  var data = window.distill3dGlb = window.distill3dGlb || {};
  var viewers = Array.prototype.slice.call(document.querySelectorAll('model-viewer[data-glb]'));
  var body = document.body, loaded = 0, failed = [];
  function mark() {
    body.setAttribute('data-viewers-total', String(viewers.length));
    body.setAttribute('data-viewers-loaded', String(loaded));
    body.setAttribute('data-viewers-failed', JSON.stringify(failed));
  }
  function fail(mv, why) {
    if (mv.getAttribute('data-state') === 'error') return;
    mv.setAttribute('data-state', 'error');
    mv.setAttribute('data-error', why);
    failed.push(mv.getAttribute('data-glb') + ': ' + why);
    var note = document.createElement('p');
    note.className = 'missing';
    note.textContent = '3D view failed: ' + why;
    mv.parentNode.insertBefore(note, mv.nextSibling);
    mv.style.display = 'none';
    mark();
  }
  function count(mv) {
    var im = new Image();
    im.onload = function () {
      var c = document.createElement('canvas');
      c.width = im.width; c.height = im.height;
      var g = c.getContext('2d');
      g.drawImage(im, 0, 0);
      var px = g.getImageData(0, 0, c.width, c.height).data, n = 0;
      for (var i = 3; i < px.length; i += 4) { if (px[i] > 0) n++; }
      mv.setAttribute('data-pixels-total', String(c.width * c.height));
      mv.setAttribute('data-pixels', String(n));
    };
    im.src = mv.toDataURL('image/png');
  }
  function start(mv) {
    if (mv.getAttribute('data-state')) return;
    mv.setAttribute('data-state', 'loading');
    var key = mv.getAttribute('data-glb'), script = document.createElement('script');
    script.src = mv.getAttribute('data-glb-js');
    script.onerror = function () { fail(mv, 'could not load ' + mv.getAttribute('data-glb-js')); };
    script.onload = function () {
      var b64 = data[key];
      delete data[key];
      if (!b64) { fail(mv, 'no GLB data in ' + mv.getAttribute('data-glb-js')); return; }
      var bin = atob(b64), bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      mv.addEventListener('load', function () {
        mv.setAttribute('data-state', 'loaded');
        loaded += 1;
        mark();
        requestAnimationFrame(function () { requestAnimationFrame(function () { count(mv); }); });
      });
      mv.addEventListener('error', function (e) {
        fail(mv, 'viewer error ' + (e.detail && e.detail.type ? e.detail.type : ''));
      });
      mv.src = URL.createObjectURL(new Blob([bytes], {type: 'model/gltf-binary'}));
    };
    document.body.appendChild(script);
  }
  mark();
  if (!(window.customElements && window.customElements.get('model-viewer'))) {
    viewers.forEach(function (mv) { fail(mv, 'viewer script did not load'); });
    return;
  }
  if (!('IntersectionObserver' in window)) { viewers.forEach(start); return; }
  var io = new IntersectionObserver(function (seen) {
    seen.forEach(function (e) { if (e.isIntersecting) { io.unobserve(e.target); start(e.target); } });
  }, {rootMargin: '400px'});
  viewers.forEach(function (mv) { io.observe(mv); });
})();
"""


def find_viewer_js() -> Path | None:
    """The model-viewer bundle to copy beside pages: ``$DISTILL3D_VIEWER_JS`` if set ("" = none), else the one
    ``make setup`` installs under tools/viewer/; None when there is none."""
    env = os.environ.get(VIEWER_ENV)
    path = (Path(env) if env else None) if env is not None else VIEWER_PACKAGE / VIEWER_BUNDLE
    return path if path is not None and path.is_file() else None


def copy_viewer(out_dir: str | Path, viewer: str | Path | bool | None = None) -> str | None:
    """Copy the viewer bundle (and its licence) to ``out_dir/viewer/``; its path relative to out_dir, or None when
    there is no bundle. viewer: None = ``find_viewer_js()``, False = no 3D views, a path = that bundle."""
    if viewer is False:
        return None
    src = find_viewer_js() if viewer is None or viewer is True else Path(viewer)
    if src is None or not src.is_file():
        return None
    dest = Path(out_dir) / VIEWER_REL
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)
    licence = src.parent.parent / "LICENSE"
    if licence.is_file():
        shutil.copy2(licence, dest.parent / "LICENSE")
    return VIEWER_REL


def write_glb_data(glb: str | Path, out_dir: str | Path, glb_rel: str, js_rel: str) -> None:
    """Write ``out_dir/js_rel``: a classic script putting ``glb``'s bytes (base64) into
    ``window.distill3dGlb[glb_rel]`` (what the page script turns into a blob: URL for the viewer)."""
    payload = base64.b64encode(Path(glb).read_bytes()).decode("ascii")
    dest = Path(out_dir) / js_rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.write_text(f"(window.distill3dGlb = window.distill3dGlb || {{}})[{json.dumps(glb_rel)}] =\n"
                   f'"{payload}";\n', encoding="ascii")
    os.replace(tmp, dest)


def viewer_element(glb_rel: str, js_rel: str, label: str) -> str:
    """The ``<model-viewer>`` of one GLB (its src is set by ``VIEWER_SCRIPT``) and a link to the GLB."""
    esc = html.escape
    return (f'<model-viewer class="viewer" data-glb="{esc(glb_rel)}" data-glb-js="{esc(js_rel)}" camera-controls '
            f'touch-action="pan-y" interaction-prompt="none" '
            f'alt="{esc(label)} 3D view"></model-viewer>'
            f'<p class="viewer-note">drag to turn, scroll to zoom; '
            f'<a href="{esc(glb_rel)}">{esc(Path(glb_rel).name)}</a></p>')


def viewer_scripts(viewer_rel: str | None) -> str:
    """The script tags a page with viewers ends with (bundle first, then the loader)."""
    if viewer_rel is None:
        return ""
    return (f'<script src="{html.escape(viewer_rel)}"></script>\n'
            f"<script>{VIEWER_SCRIPT}</script>\n")


def slug(text: str, limit: int = 40) -> str:
    """Filesystem-safe lower-case name of ``text``."""
    return (re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x")[:limit]


def _field(entry: Any, name: str, default: Any = None) -> Any:
    return entry.get(name, default) if isinstance(entry, Mapping) else getattr(entry, name, default)


def _label(entry: Any) -> str:
    seed = _field(entry, "seed")
    return f"{_field(entry, 'method', '?')}" + ("" if seed is None else f" (seed {seed})")


def _asset_folder(entry: Any, index: int) -> Path:
    """The entry's folder under the report: assets/<index>-<method>-<prompt>[-s<seed>]."""
    method, prompt = slug(_field(entry, "method", "method")), slug(_field(entry, "prompt", ""))
    folder = Path("assets") / f"{index:02d}-{method}-{prompt}"
    seed = _field(entry, "seed")
    return folder if seed is None else folder.with_name(folder.name + f"-s{seed}")


def _copy_images(entry: Any, index: int, out_dir: Path) -> list[tuple[str, str | None]]:
    """Copy the entry's turntable and views into out_dir/assets/...; [(kind, relative path or None if absent)]."""
    asset_dir = _field(entry, "asset_dir")
    folder = _asset_folder(entry, index)
    out = []
    for name, kind in ASSET_IMAGES:
        src = None if asset_dir is None else Path(asset_dir) / name
        if src is None or not src.is_file():
            out.append((kind, None))
            continue
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out_dir / folder / name)
        out.append((kind, (folder / name).as_posix()))
    return out


def _copy_mesh(entry: Any, index: int, out_dir: Path, with_viewer: bool) -> str | None:
    """Copy the entry's mesh.glb beside its images (and, for the viewer, its mesh.glb.js data script); its relative
    path, or None if the entry has none."""
    asset_dir = _field(entry, "asset_dir")
    src = None if asset_dir is None else Path(asset_dir) / ASSET_MESH
    if src is None or not src.is_file():
        return None
    rel = (_asset_folder(entry, index) / ASSET_MESH).as_posix()
    (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, out_dir / rel)
    if with_viewer:
        write_glb_data(src, out_dir, rel, rel + ".js")
    return rel


def _copy_figures(figures: Sequence[tuple[str, str | Path]], out_dir: Path) -> list[tuple[str, str]]:
    out = []
    for k, (caption, path) in enumerate(figures):
        rel = Path("figures") / f"{k:02d}-{Path(path).name}"
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out_dir / rel)
        out.append((caption, rel.as_posix()))
    return out


def _view_3d(glb_rel: str | None, viewer_rel: str | None, label: str) -> str:
    """The figure's 3D view: the viewer, or a note saying why there is none (with a link to the GLB if any)."""
    if glb_rel is None:
        return f'<p class="missing">no 3D view (no {ASSET_MESH})</p>'
    if viewer_rel is None:
        return (f'<p class="missing no-viewer">{html.escape(VIEWER_MISSING)}; '
                f'<a href="{html.escape(glb_rel)}">{ASSET_MESH}</a></p>')
    return viewer_element(glb_rel, glb_rel + ".js", label)


def write_report(
    entries: Sequence[Mapping[str, Any] | Any], out_dir: str | Path, title: str = "distill3d comparison",
    figures: Sequence[tuple[str, str | Path]] = (), viewer: str | Path | bool | None = None,
    sections: Sequence[tuple[str, list[str], list[list[str]]]] = (),
) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/report.md`` (images and meshes copied under ``out_dir/assets``,
    figures under ``out_dir/figures``, the 3D viewer under ``out_dir/viewer``) and return the HTML path.

    entries: mappings (or objects) with method, prompt, seed (may be None), asset_dir (folder holding turntable.gif,
    views.png and mesh.glb; missing files are reported as missing, never linked) and metrics (a ``metrics.suite``
    dict or None). Entries are grouped by prompt in order of first appearance. figures: extra (caption, PNG path)
    pairs shown at the end (e.g. ``sweep_figure``'s grid and plot). viewer: the model-viewer bundle (None: the one
    ``make setup`` installs, see ``find_viewer_js``; False: no 3D views). sections: (heading, table header, table
    rows) shown first (e.g. the comparison's claims and per-method summary), as HTML and Markdown tables.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        prompts.setdefault(str(_field(entry, "prompt", "")), []).append(i)
    images = {i: _copy_images(entry, i, out_dir) for i, entry in enumerate(entries)}
    has_mesh = any(_field(e, "asset_dir") is not None and (Path(_field(e, "asset_dir")) / ASSET_MESH).is_file()
                   for e in entries)
    viewer_rel = copy_viewer(out_dir, viewer) if has_mesh else None
    meshes = {i: _copy_mesh(entry, i, out_dir, viewer_rel is not None) for i, entry in enumerate(entries)}
    figs = _copy_figures(figures, out_dir)
    header = ["method"] + [name for name, _, _ in METRIC_COLUMNS]
    esc = html.escape

    body = [f"<h1>{esc(title)}</h1>"]
    md = [f"# {title}", ""]
    for s_index, (heading, head, rows) in enumerate(sections):
        body.append(f'<section class="summary" id="summary-{s_index}"><h2>{esc(heading)}</h2>'
                    f'<table class="metrics"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head)
                    + "</tr></thead><tbody>")
        body += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows]
        body.append("</tbody></table></section>")
        md += [f"## {heading}", "", markdown_table(head, [[str(c) for c in row] for row in rows]), ""]
    for p_index, (prompt, idx) in enumerate(prompts.items()):
        body.append(f'<section class="prompt" id="prompt-{p_index}"><h2>{esc(prompt)}</h2><div class="assets">')
        md += [f"## {prompt}", ""]
        for i in idx:
            label = _label(entries[i])
            body.append(f"<figure><figcaption>{esc(label)}</figcaption>")
            for kind, rel in images[i]:
                if kind == "turntable":  # the turntable and the 3D view side by side
                    body.append('<div class="pair">')
                if rel is None:
                    body.append(f'<p class="missing">no {kind}</p>')
                else:
                    body.append(f'<img class="{kind}" src="{esc(rel)}" alt="{esc(label)} {kind}">')
                    md.append(f"![{label} {kind}]({rel})")
                if kind == "turntable":
                    body.append(f'<div class="view3d">{_view_3d(meshes[i], viewer_rel, label)}</div></div>')
            if meshes[i] is not None:
                md.append(f"[{label} {ASSET_MESH}]({meshes[i]})")
            body.append("</figure>")
        body.append("</div>")
        rows = [[_label(entries[i])] + row_values(_field(entries[i], "metrics")) for i in idx]
        body.append(f'<table class="metrics" id="metrics-{p_index}"><thead><tr>'
                    + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
        body += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
        body.append("</tbody></table></section>")
        md += ["", markdown_table(header, rows), ""]
    if figs:
        body.append('<section class="figures"><h2>Figures</h2><div class="assets">')
        md += ["## Figures", ""]
        for caption, rel in figs:
            body.append(f'<figure><img src="{esc(rel)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption>'
                        "</figure>")
            md += [f"![{caption}]({rel})", ""]
        body.append("</div></section>")
    legend = "; ".join(f"{name}: {path} ({better} is better)" if better else f"{name}: {path}"
                       for name, path, better in METRIC_COLUMNS)
    body.append(f'<p class="legend"><small>{esc(legend)}</small></p>')

    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>{_CSS}{VIEWER_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_CHECK_SCRIPT}</script>\n{viewer_scripts(viewer_rel)}</body></html>\n"
    )
    (out_dir / "index.html").write_text(page, encoding="utf-8")
    (out_dir / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    (out_dir / "metrics.json").write_text(json.dumps(
        [{"method": _field(e, "method"), "prompt": _field(e, "prompt"), "seed": _field(e, "seed"),
          "metrics": _field(e, "metrics")} for e in entries], indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out_dir / "index.html"
