"""The markdown artifact: a table of stage outputs read from their manifests and an embedded PNG."""

from __future__ import annotations

import base64
import json

import fake_stages
from tasks.artifacts import artifact_key, outputs_markdown


def test_outputs_markdown_has_a_row_per_stage_and_the_render(tmp_path):
    out = tmp_path / "nerf"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"complete": True, "key": "ab" * 32, "seconds": 1.5}))
    (tmp_path / "views.png").write_bytes(fake_stages.PNG_1x1)
    md = outputs_markdown("dreamfusion: a red cube", {"nerf_sds": str(out)}, tmp_path / "views.png")
    assert f"| nerf_sds | `{'ab' * 6}` | 1.5 | `{out}` |" in md
    assert "data:image/png;base64," + base64.b64encode(fake_stages.PNG_1x1).decode() in md
    assert artifact_key("dreamfusion-A red cube, back view!") == "dreamfusion-a-red-cube-back-view"
