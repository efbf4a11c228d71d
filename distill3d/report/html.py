"""The comparison report: a static, offline HTML page and the same as Markdown.

Per prompt: each method's (and seed's) turntable GIF and view grid side by side, then the metrics table
(``table.METRIC_COLUMNS``). Images are copied beside the page (relative links; nothing is fetched from the network,
no CDN), so the folder can be zipped, served or opened from disk. A small inline script marks, once the page has
loaded, how many images it holds and which failed to load: ``<body data-images-total="N"
data-images-broken='["src", ...]'>`` (what the browser test reads).
"""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distill3d.report.table import METRIC_COLUMNS, markdown_table, row_values

ASSET_IMAGES = (("turntable.gif", "turntable"), ("views.png", "views"))

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


def slug(text: str, limit: int = 40) -> str:
    """Filesystem-safe lower-case name of ``text``."""
    return (re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x")[:limit]


def _field(entry: Any, name: str, default: Any = None) -> Any:
    return entry.get(name, default) if isinstance(entry, Mapping) else getattr(entry, name, default)


def _label(entry: Any) -> str:
    seed = _field(entry, "seed")
    return f"{_field(entry, 'method', '?')}" + ("" if seed is None else f" (seed {seed})")


def _copy_images(entry: Any, index: int, out_dir: Path) -> list[tuple[str, str | None]]:
    """Copy the entry's turntable and views into out_dir/assets/...; [(kind, relative path or None if absent)]."""
    asset_dir = _field(entry, "asset_dir")
    method, prompt = slug(_field(entry, "method", "method")), slug(_field(entry, "prompt", ""))
    folder = Path("assets") / f"{index:02d}-{method}-{prompt}"
    seed = _field(entry, "seed")
    if seed is not None:
        folder = folder.with_name(folder.name + f"-s{seed}")
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


def _copy_figures(figures: Sequence[tuple[str, str | Path]], out_dir: Path) -> list[tuple[str, str]]:
    out = []
    for k, (caption, path) in enumerate(figures):
        rel = Path("figures") / f"{k:02d}-{Path(path).name}"
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out_dir / rel)
        out.append((caption, rel.as_posix()))
    return out


def write_report(
    entries: Sequence[Mapping[str, Any] | Any], out_dir: str | Path, title: str = "distill3d comparison",
    figures: Sequence[tuple[str, str | Path]] = (),
) -> Path:
    """Write ``out_dir/index.html`` and ``out_dir/report.md`` (images copied under ``out_dir/assets`` and
    ``out_dir/figures``) and return the HTML path.

    entries: mappings (or objects) with method, prompt, seed (may be None), asset_dir (folder holding turntable.gif
    and views.png; missing files are reported as missing, never linked) and metrics (a ``metrics.suite`` dict or
    None). Entries are grouped by prompt in order of first appearance. figures: extra (caption, PNG path) pairs
    shown at the end (e.g. ``sweep_figure``'s grid and plot).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        prompts.setdefault(str(_field(entry, "prompt", "")), []).append(i)
    images = {i: _copy_images(entry, i, out_dir) for i, entry in enumerate(entries)}
    figs = _copy_figures(figures, out_dir)
    header = ["method"] + [name for name, _, _ in METRIC_COLUMNS]
    esc = html.escape

    body = [f"<h1>{esc(title)}</h1>"]
    md = [f"# {title}", ""]
    for p_index, (prompt, idx) in enumerate(prompts.items()):
        body.append(f'<section class="prompt" id="prompt-{p_index}"><h2>{esc(prompt)}</h2><div class="assets">')
        md += [f"## {prompt}", ""]
        for i in idx:
            label = _label(entries[i])
            body.append(f"<figure><figcaption>{esc(label)}</figcaption>")
            for kind, rel in images[i]:
                if rel is None:
                    body.append(f'<p class="missing">no {kind}</p>')
                else:
                    body.append(f'<img class="{kind}" src="{esc(rel)}" alt="{esc(label)} {kind}">')
                    md.append(f"![{label} {kind}]({rel})")
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
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{_CHECK_SCRIPT}</script>\n</body></html>\n"
    )
    (out_dir / "index.html").write_text(page, encoding="utf-8")
    (out_dir / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    (out_dir / "metrics.json").write_text(json.dumps(
        [{"method": _field(e, "method"), "prompt": _field(e, "prompt"), "seed": _field(e, "seed"),
          "metrics": _field(e, "metrics")} for e in entries], indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return out_dir / "index.html"
