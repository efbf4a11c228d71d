"""The README's results block (claims table + per-method means) is what the committed metrics give, and follows them:
no verdict or number in it is typed in."""

from __future__ import annotations

import json
from pathlib import Path

from report_fixtures import fake_metrics

from flows.readme_claims import BEGIN, END, main, replace_block, results_block

REPO = Path(__file__).resolve().parents[1]


def test_the_committed_readme_shows_what_the_committed_metrics_give() -> None:
    assert main(["--check"]) == 0, "README.md's results block is stale: run `python -m flows.readme_claims`"


def test_the_block_follows_a_metric(tmp_path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("comparison:\n  runs:\n    sweep: {method: dreamfusion, prompt: cube, evidence: sds, "
                      "sweep: {nerf_sds.guidance.guidance_scale: [5, 100]}}\n")
    data = tmp_path / "data"
    (data / "dreamfusion" / "metrics").mkdir(parents=True)
    (data / "dreamfusion" / "metrics" / "cube.json").write_text(json.dumps(fake_metrics(0.8, 0.6)))
    sweep = data / "runs" / "sweep" / "metrics"
    sweep.mkdir(parents=True)
    (sweep / "w5-s0.json").write_text(json.dumps(fake_metrics(0.8, 0.6)))
    (sweep / "w100-s0.json").write_text(json.dumps(fake_metrics(0.8, 0.95)))  # saturated at w = 100
    block = results_block(data, params)
    assert "| DreamFusion over-saturates at large guidance scales | **reproduced** |" in block
    assert "| dreamfusion | 0.8 |" in block
    (sweep / "w100-s0.json").write_text(json.dumps(fake_metrics(0.8, 0.6)))  # no longer saturated
    assert "| DreamFusion over-saturates at large guidance scales | **not reproduced** |" in results_block(data, params)

    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{BEGIN}\nold\n{END}\n\nmore\n")
    args = ["--readme", str(readme), "--data", str(data), "--params", str(params)]
    assert main([*args, "--check"]) == 1
    assert main(args) == 0 and main([*args, "--check"]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\n") and text.endswith(f"{END}\n\nmore\n") and "old" not in text
    assert replace_block(text, results_block(data, params)) == text


def test_the_sds_seed_distance_comes_from_the_committed_summary_not_the_assets(tmp_path) -> None:
    """A git clone has the metrics and data/comparison_summary.json but not the GLBs (DVC outputs): the diversity
    claim must read the SDS seeds' distance the comparison stage measured and committed."""
    from stages.comparison import SEED_DIVERSITY

    params = tmp_path / "params.yaml"
    params.write_text("comparison:\n  runs:\n    vsd: {method: prolificdreamer, prompt: cube, evidence: vsd, "
                      "sweep: {vsd_nerf.guidance.guidance_scale: [7.5]}}\n")
    data = tmp_path / "data"
    vsd = data / "runs" / "vsd" / "metrics"
    vsd.mkdir(parents=True)
    (vsd / "w7_5-s0.json").write_text(json.dumps({**fake_metrics(0.8, 0.6), "diversity": 0.02}))
    claim = "| VSD's particles are more diverse than SDS's seeds | **{}** |"
    assert claim.format("no data") in results_block(data, params)  # no assets and no summary: no SDS distance
    summary = data / "comparison_summary.json"
    summary.write_text(json.dumps({f"{SEED_DIVERSITY}7.5": 0.03, "claim.vsd_diversity": "not reproduced"}))
    assert claim.format("not reproduced") in results_block(data, params)
    summary.write_text(json.dumps({f"{SEED_DIVERSITY}7.5": 0.01}))
    assert claim.format("reproduced") in results_block(data, params)
