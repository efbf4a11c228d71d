"""The reports' interactive 3D view (model-viewer, installed by `make setup` in tools/viewer/) in headless Chromium.

A report of one real textured GLB (the toy world's red cube) is opened from disk (plain file://, no
--allow-file-access-from-files) with software WebGL (SwiftShader); the viewer must load the model and draw it: a
snapshot of its canvas has model pixels (the page's own count) and a screenshot of the page, cropped to the viewer,
shows red ones. Nothing may be requested but file:, blob: and data: URLs. The page must report a missing viewer script,
a missing GLB data script and a broken GLB; without the viewer the report says so. Needs Debian's chromium (skips only
when it is absent and cannot be installed) and the viewer (fails when `make setup` has not installed it)."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from browser import DevToolsPage
from distill3d.mesh.gltf import save_glb
from distill3d.report.gallery import write_gallery
from distill3d.report.html import VIEWER_ENV, VIEWER_REL, find_viewer_js, write_report
from distill3d.toyworld.gt_mesh import gt_mesh
from distill3d.toyworld.vocab import parse_prompt
from report_fixtures import fake_asset

PROMPT = "a red cube"
# the page's state once every viewer either drew its model or failed (what the tests wait for)
SETTLED = """(function () {
  var b = document.body, vs = document.querySelectorAll('model-viewer[data-glb]');
  if (!b || !b.hasAttribute('data-viewers-total')) return null;
  for (var i = 0; i < vs.length; i++) {
    var s = vs[i].getAttribute('data-state');
    if (s !== 'error' && !(s === 'loaded' && vs[i].hasAttribute('data-pixels'))) return null;
  }
  return {total: +b.getAttribute('data-viewers-total'), loaded: +b.getAttribute('data-viewers-loaded'),
          failed: JSON.parse(b.getAttribute('data-viewers-failed')),
          images_broken: JSON.parse(b.getAttribute('data-images-broken') || 'null'),
          viewers: Array.prototype.map.call(vs, function (v) {
            var r = v.getBoundingClientRect();
            return {state: v.getAttribute('data-state'), error: v.getAttribute('data-error'),
                    pixels: +v.getAttribute('data-pixels'), total: +v.getAttribute('data-pixels-total'),
                    rect: {x: r.x, y: r.y, width: r.width, height: r.height}};
          }),
          notes: Array.prototype.map.call(document.querySelectorAll('.missing'), function (p) {
            return p.textContent; })};
})()"""


@pytest.fixture(scope="module")
def viewer_js():
    path = find_viewer_js()
    if path is None:
        pytest.fail("the 3D viewer is not installed: run `make setup` (npm ci in tools/viewer)")
    return path


@pytest.fixture(scope="module")
def asset(tmp_path_factory):
    """turntable.gif, views.png and a real textured mesh.glb of the toy world's red cube (about 1 s)."""
    folder = fake_asset(tmp_path_factory.mktemp("asset") / "red_cube", PROMPT)
    save_glb(gt_mesh(parse_prompt(PROMPT), resolution=32, texture_size=64), folder / "mesh.glb")
    return folder


def _report(asset, out, **kw):
    return write_report([{"method": "ground truth", "prompt": PROMPT, "seed": 0, "asset_dir": asset,
                          "metrics": None}], out, title="viewer check", **kw)


def _settled(browser: DevToolsPage, page, timeout_s: float = 90.0) -> dict:
    """Open ``page`` and wait until every viewer drew or failed. SwiftShader's first frame (compiling model-viewer's
    shaders, its environment map) takes 3-35 s depending on how busy the CPUs are; the wait allows for that."""
    browser.goto(page)
    state = browser.wait_for(SETTLED, timeout_s)
    assert state, (f"the viewer neither drew nor failed in {timeout_s} s; console: {browser.console[-5:]}; "
                   f"chromium: {browser.log_tail(800)}")
    return state


def test_the_report_copies_the_viewer_and_the_glb(asset, viewer_js, tmp_path) -> None:
    page = _report(asset, tmp_path / "report")
    out, text = page.parent, page.read_text()
    assert (out / VIEWER_REL).read_bytes() == viewer_js.read_bytes() and (out / "viewer" / "LICENSE").is_file()
    glb = next(out.glob("assets/*/mesh.glb"))
    rel = glb.relative_to(out).as_posix()
    assert glb.read_bytes() == (asset / "mesh.glb").read_bytes()
    data = (out / f"{rel}.js").read_text()
    assert json.dumps(rel) in data and base64.b64decode(data.split('"')[-2]) == glb.read_bytes()
    assert f'data-glb="{rel}" data-glb-js="{rel}.js"' in text and f'<script src="{VIEWER_REL}"></script>' in text
    assert "http://" not in text and "https://" not in text and 'type="module"' not in text
    assert f"[ground truth (seed 0) mesh.glb]({rel})" in (out / "report.md").read_text()


def test_without_the_viewer_the_report_says_so(asset, tmp_path, monkeypatch) -> None:
    for kw, env in (({"viewer": False}, None), ({}, ""), ({"viewer": tmp_path / "nope.js"}, None)):
        if env is not None:
            monkeypatch.setenv(VIEWER_ENV, env)
        out = tmp_path / f"report-{len(list(tmp_path.iterdir()))}"
        text = _report(asset, out, **kw).read_text()
        assert "<model-viewer" not in text and "3D view unavailable" in text and 'href="assets/' in text
        assert not (out / "viewer").exists() and not list(out.glob("assets/*/mesh.glb.js"))
        assert next(out.glob("assets/*/mesh.glb")).is_file()
        monkeypatch.delenv(VIEWER_ENV, raising=False)


def test_the_gallery_has_a_3d_view_per_asset(asset, viewer_js, tmp_path) -> None:
    (tmp_path / "red").mkdir()
    for name in ("mesh.glb", "turntable.gif"):
        (tmp_path / "red" / name).write_bytes((asset / name).read_bytes())
    entries = [{"name": "red", "prompt": PROMPT, "method": "gt", "seed": 0, "status": "ok", "out": "red"},
               {"name": "bad", "prompt": "a flying cube", "method": "gt", "seed": 0, "status": "failed",
                "reason": "unknown word"}]
    text = write_gallery(entries, tmp_path).read_text()
    assert text.count("<model-viewer") == 1 and 'data-glb="red/mesh.glb" data-glb-js="viewer/glb/000-red.js"' in text
    assert (tmp_path / VIEWER_REL).is_file() and (tmp_path / "viewer/glb/000-red.js").is_file()
    assert "<model-viewer" not in write_gallery(entries, tmp_path / "x", viewer=False).read_text()


def test_the_viewer_draws_the_model_offline(asset, viewer_js, tmp_path) -> None:
    page = _report(asset, tmp_path / "report")
    with DevToolsPage() as browser:
        state = _settled(browser, page)
        viewer = state["viewers"][0]
        assert (state["total"], state["loaded"], state["failed"]) == (1, 1, []), state
        assert state["images_broken"] == [] and viewer["state"] == "loaded"
        # the page's count: pixels of the viewer's own canvas (transparent background) that the model covers
        assert viewer["total"] >= 200 * 200 and 0.1 * viewer["total"] < viewer["pixels"] < 0.9 * viewer["total"], viewer
        # an independent look from outside the page: the screenshot of the viewer's box, on the white page
        shot = np.asarray(Image.open(io.BytesIO(browser.screenshot(viewer["rect"]))).convert("RGB")).astype(int)
        drawn = (shot < 235).any(axis=-1)
        red = (shot[..., 0] > shot[..., 1] + 60) & (shot[..., 0] > shot[..., 2] + 60)
        assert drawn.mean() > 0.1 and red.sum() > 0.8 * drawn.sum(), (drawn.mean(), red.sum(), drawn.sum())
        # offline: the page, its images, the viewer bundle and the GLB data script from disk; the model as a blob
        schemes = {url.split(":", 1)[0] for url in browser.requests}
        assert schemes <= {"file", "blob", "data"} and "blob" in schemes, browser.requests
        assert any(url.endswith("/" + VIEWER_REL) for url in browser.requests)


def test_the_page_reports_a_missing_viewer_glb_or_broken_model(asset, viewer_js, tmp_path) -> None:
    pages = {}
    for case in ("no viewer script", "no glb data", "broken glb"):
        page = pages[case] = _report(asset, tmp_path / case.replace(" ", "-"))
        data = next(page.parent.glob("assets/*/mesh.glb.js"))
        if case == "no viewer script":
            (page.parent / VIEWER_REL).unlink()
        elif case == "no glb data":
            data.unlink()
        else:  # valid base64, not a GLB
            head = data.read_text().split(" =\n")[0]
            data.write_text(f'{head} =\n"{base64.b64encode(b"not a glb").decode()}";\n')
    with DevToolsPage() as browser:
        for case, why in (("no viewer script", "viewer script did not load"),
                          ("no glb data", "could not load assets/"), ("broken glb", "viewer error")):
            state = _settled(browser, pages[case], timeout_s=30.0)
            assert (state["total"], state["loaded"]) == (1, 0) and len(state["failed"]) == 1, (case, state)
            assert why in state["failed"][0] and state["viewers"][0]["state"] == "error", (case, state)
            assert any(note.startswith("3D view failed: " + why) for note in state["notes"]), (case, state)
            assert state["images_broken"] == []  # the rest of the page still works
