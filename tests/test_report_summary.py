"""The DVC report stage's summary (report_summary.json, read by `dvc metrics show`): the headline geometry metrics
per prompt and their means, the all-view silhouette IoU first."""

import json

from report_fixtures import fake_asset, fake_metrics
from stages import report


def test_report_summary_keys_and_means(tmp_path) -> None:
    assets, metrics, out = tmp_path / "assets", tmp_path / "metrics", tmp_path / "out"
    metrics.mkdir()
    out.mkdir()
    for name, prompt, iou in (("red_cube", "a red cube", 0.9), ("blue_torus", "a blue torus", 0.7)):
        fake_asset(assets / name, prompt)
        (metrics / f"{name}.json").write_text(json.dumps({**fake_metrics(iou, 0.7), "prompt": prompt}))
    fake_asset(assets / "no_metrics", "a red cube")  # an asset whose metrics are missing: None, left out of means
    result = report.run(report.Params(), {"assets": assets, "metrics": metrics}, out)
    summary = json.loads((out / "metrics.json").read_text())
    keys = ["iou_all_views", "volume_iou", "chamfer", "colour_error_lab", "normal_error_deg", "roughness_deg",
            "iou_ring_mean", "saturation", "saturation_excess"]
    assert list(summary["mean"]) == keys and summary["count"] == 3
    assert summary["prompts"]["blue_torus"]["volume_iou"] == 0.7 - 0.1
    assert summary["prompts"]["no_metrics"] == dict.fromkeys(keys)
    mean = summary["mean"]
    assert abs(mean["iou_all_views"] - 0.8) < 1e-9 and abs(mean["volume_iou"] - 0.7) < 1e-9
    assert abs(mean["iou_ring_mean"] - 0.82) < 1e-9 and mean["normal_error_deg"] == 12.5 and mean["chamfer"] == 0.011
    assert result["mean_iou_all_views"] == mean["iou_all_views"] and "mean_iou_mean" not in result
    md = (out / "report.md").read_text()
    assert "| IoU all views | vol. IoU | Chamfer |" in md
