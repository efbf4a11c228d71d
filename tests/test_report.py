"""The comparison report (offline HTML + Markdown) and the guidance-scale sweep figure, read back from disk."""

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from distill3d.report.html import write_report
from distill3d.report.sweep import sweep_figure
from distill3d.report.table import METRIC_COLUMNS
from distill3d.report.table import format_value, lookup, markdown_table, row_values
from report_fixtures import fake_entries, fake_metrics, fake_sweep_points


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.tables, self.rows, self.links = 0, 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        if tag == "table" and "metrics" in (a.get("class") or ""):
            self.tables += 1
        if tag == "tr":
            self.rows += 1
        for key in ("href", "src"):
            if key in a:
                self.links.append(a[key])


def test_table_helpers() -> None:
    m = fake_metrics(0.9, 0.7)
    assert lookup(m, "chamfer.chamfer") == 0.011 and lookup(m, "chamfer.nope") is None and lookup(None, "x") is None
    assert format_value(0.123456) == "0.123" and format_value(None) == "–" and format_value(True) == "yes"
    values = row_values(m)
    assert len(values) == len(METRIC_COLUMNS) and values[0] == "0.9" and values[-1] == "skipped"
    shown = dict(zip([name for name, _, _ in METRIC_COLUMNS], values))
    assert shown["vol. IoU"] == "0.8" and shown["Chamfer"] == "0.011" and shown["normal err °"] == "12.5"
    assert shown["roughness °"] == "4.25" and shown["IoU ring"] == "0.92"


def test_geometry_columns_come_first() -> None:
    paths = [path for _, path, _ in METRIC_COLUMNS]
    assert paths[:4] == ["iou_all_views", "volume.iou", "chamfer.chamfer", "colour_error_lab"]
    assert {"normals.error_deg", "normals.roughness_deg", "iou_ring_mean"} <= set(paths) and "iou_mean" not in paths
    assert markdown_table(["a", "b|c"], [["1", "2"]]).splitlines() == ["| a | b\\|c |", "|---|---|", "| 1 | 2 |"]


def test_write_report_is_self_contained(tmp_path) -> None:
    entries = fake_entries(tmp_path / "runs")
    sweep = sweep_figure(fake_sweep_points(), tmp_path / "sweep")
    page = write_report(entries, tmp_path / "report", title="Toy <comparison>",
                        figures=[("sweep grid", sweep["grid"]), ("sweep plot", sweep["plot"])])
    out = page.parent
    assert page.name == "index.html" and (out / "report.md").is_file()
    text = page.read_text()
    assert "Toy &lt;comparison&gt;" in text and not re.search(r"(?:src|href)=\"(?:https?:)?//", text)
    parsed = _Collect()
    parsed.feed(text)
    # 4 turntables + 3 view grids (one missing, shown as text, never as a broken link) + 2 figures
    assert len(parsed.imgs) == 9 and 'class="missing">no views' in text
    for src in parsed.imgs:
        assert not src.startswith(("/", "http")) and (out / src).is_file()
        Image.open(out / src).verify()
    assert parsed.tables == 2 and parsed.rows == 2 * 3  # per prompt: a header row + one row per method
    assert text.count("<td>dreamfusion (seed 0)</td>") == 2 and "<td>skipped</td>" in text
    md = (out / "report.md").read_text()
    assert md.startswith("# Toy <comparison>") and md.count("## a red cube") == 1
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / rel).is_file()
    assert md.count("| dreamfusion (seed 0) |") == 2 and "| IoU all views | vol. IoU | Chamfer |" in md
    assert "| dreamfusion (seed 0) | 0.91 | 0.81 | 0.011 | 3.5 | red | 12.5 | 4.25 | 0.93 |" in md
    assert "<th>normal err °</th>" in text and "volume.iou (high is better)" in text
    saved = json.loads((out / "metrics.json").read_text())
    assert [e["method"] for e in saved] == ["dreamfusion", "sjc"] * 2 and saved[1]["metrics"] is None


def test_sweep_figure_grid_and_plot(tmp_path) -> None:
    points = fake_sweep_points(scales=(1.0, 10.0, 100.0), seeds=(0, 1), size=16)
    points = [p for p in points if not (p["guidance_scale"] == 100.0 and p["seed"] == 1)]  # one missing cell
    paths = sweep_figure(points, tmp_path, title="sweep")
    grid = np.asarray(Image.open(paths["grid"]).convert("RGB"))
    cols, rows = 3, 2
    assert grid.shape[1] == cols * 16 + (cols + 1) * 2 and grid.shape[0] > rows * 16 + (rows + 1) * 2
    bottom_row = grid[-2 - 16 : -2]
    # columns are guidance scales 1, 10, 100 (red, green, blue images); the missing (100, seed 1) cell is white
    assert (bottom_row[:, 2 + 8] == [255, 0, 0]).all() and (bottom_row[:, 2 + 18 + 8] == [0, 255, 0]).all()
    assert (bottom_row[:, 2 + 36 + 8] == 255).all()
    plot = Image.open(paths["plot"])
    assert plot.format == "PNG" and plot.size == (800, 320)
    assert len(np.unique(np.asarray(plot.convert("L")))) > 20  # something was drawn
    with pytest.raises(ValueError):
        sweep_figure([], tmp_path)
