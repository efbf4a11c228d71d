"""Open the generated report in headless Chromium: every image loads, the metrics tables are there; and the page's
own check does catch a broken image. Needs Debian's chromium (installed by CI; installed here if missing)."""

import json
import re
from html import unescape

from browser import dump_dom
from distill3d.report.html import write_report
from distill3d.report.sweep import sweep_figure
from report_fixtures import fake_entries, fake_sweep_points


def _body_attr(dom: str, name: str) -> str:
    match = re.search(rf'<body[^>]*\s{name}="([^"]*)"', dom)
    assert match, f"body has no {name} attribute: the page's load check did not run"
    return unescape(match.group(1))


def _report(tmp_path):
    sweep = sweep_figure(fake_sweep_points(), tmp_path / "sweep")
    return write_report(fake_entries(tmp_path / "runs"), tmp_path / "report", title="browser check",
                        figures=[("sweep grid", sweep["grid"]), ("sweep plot", sweep["plot"])])


def test_report_loads_every_image_in_chromium(tmp_path) -> None:
    page = _report(tmp_path)
    dom = dump_dom(page)
    assert json.loads(_body_attr(dom, "data-images-broken")) == []
    assert int(_body_attr(dom, "data-images-total")) == page.read_text().count("<img ") == 9
    assert len(re.findall(r'<table class="metrics"', dom)) == 2
    assert "<th>IoU all views</th>" in dom and "<th>vol. IoU</th>" in dom and "<td>dreamfusion (seed 0)</td>" in dom


def test_the_page_reports_a_broken_image(tmp_path) -> None:
    page = _report(tmp_path)
    gone = sorted((page.parent / "assets").rglob("turntable.gif"))[0]
    gone.unlink()
    broken = json.loads(_body_attr(dump_dom(page), "data-images-broken"))
    assert broken == [gone.relative_to(page.parent).as_posix()]
