"""CLIP R-precision: the retrieval arithmetic with a fake scorer, the loading plumbing with a tiny random CLIP saved
in transformers layout (its numbers mean nothing), and the honest skips."""

import json

import pytest
import torch

from distill3d.cameras import ring_cameras
from distill3d.metrics.clip_score import (
    ClipScorer, ClipUnavailable, clip_r_precision, load_clip, r_precision, target_caption, toy_captions,
)
from distill3d.toyworld.render import render_gt
from distill3d.toyworld.vocab import parse_prompt
from tiny_models import build_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    return str(build_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip"))


def test_toy_captions_and_targets() -> None:
    captions = toy_captions()
    assert len(captions) == len(set(captions)) == 140 and "a red cube" in captions
    assert "a blue striped torus with a face" in captions
    assert target_caption("a cube") == "a white cube"
    assert target_caption("a red cube, back view") == "a red cube"
    assert target_caption("a photo of a corgi") == "a photo of a corgi"


def test_r_precision_arithmetic_with_an_oracle_scorer() -> None:
    captions = ["a red cube", "a blue cube", "a red sphere"]
    basis = torch.eye(3)

    def encode_texts(texts):
        return torch.stack([basis[captions.index(t)] for t in texts])

    def encode_images(images):  # the image's mean red channel picks the caption it "looks like"
        return basis[(images[..., 0].mean(dim=(1, 2)) * 2.99).long()]

    scorer = ClipScorer(encode_images, encode_texts, "oracle")
    images = torch.stack([torch.full((4, 4, 3), v) for v in (0.0, 0.0, 0.5, 0.99)])  # -> red cube x2, blue, sphere
    out = r_precision(scorer, images, "a red cube", captions)
    assert out["r_precision"] == 0.5 and out["per_view_correct"] == [True, True, False, False]
    assert out["per_view_top"] == ["a red cube", "a red cube", "a blue cube", "a red sphere"]
    assert out["n_images"] == 4 and out["n_candidates"] == 3 and out["model"] == "oracle"


def test_tiny_clip_end_to_end_plumbing(tiny_clip: str) -> None:
    from transformers import AutoTokenizer, CLIPModel

    scorer = load_clip(tiny_clip)
    text = scorer.encode_texts(["a red cube", "a blue striped torus with a face"])
    model = CLIPModel.from_pretrained(tiny_clip, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(tiny_clip, local_files_only=True)(["a red cube"], return_tensors="pt")
    with torch.no_grad():
        direct = model.get_text_features(**tok)
    direct = getattr(direct, "pooler_output", direct)
    assert text.shape == (2, model.config.projection_dim)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(text[0], torch.nn.functional.normalize(direct[0], dim=-1), atol=1e-5)
    assert not torch.allclose(text[0], text[1])

    renders = render_gt(parse_prompt("a red cube"), ring_cameras(3, 15.0), 48)["rgb"]
    out = clip_r_precision(renders, "a red cube", tiny_clip)
    assert "skipped" not in out and 0.0 <= out["r_precision"] <= 1.0
    assert out["n_images"] == 3 and out["n_candidates"] == 140 and out["target"] == "a red cube"
    assert set(out["per_view_top"]) <= set(toy_captions())
    assert out == clip_r_precision(renders, "a red cube", tiny_clip)  # deterministic
    json.dumps(out, allow_nan=False)


def test_missing_or_unusable_clip_is_skipped_with_the_reason(tmp_path, tiny_clip: str) -> None:
    images = torch.rand(2, 8, 8, 3)
    assert "no CLIP model folder" in clip_r_precision(images, "a red cube", None)["skipped"]
    missing = clip_r_precision(images, "a red cube", tmp_path / "nowhere")
    assert set(missing) == {"skipped"} and "not found" in missing["skipped"] and "nowhere" in missing["skipped"]
    (tmp_path / "empty").mkdir()
    assert "config.json" in clip_r_precision(images, "a red cube", tmp_path / "empty")["skipped"]
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "not a CLIP model" in clip_r_precision(images, "a red cube", tmp_path / "bert")["skipped"]
    broken = tmp_path / "no-weights"
    broken.mkdir()
    (broken / "config.json").write_text(open(f"{tiny_clip}/config.json").read())  # a CLIP config, no weights
    assert "could not load CLIP" in clip_r_precision(images, "a red cube", broken)["skipped"]
    with pytest.raises(ClipUnavailable):
        load_clip(tmp_path / "nowhere")


def test_suite_reports_clip_r_precision_with_a_model_and_skips_without(tiny_clip: str) -> None:
    from distill3d.metrics.suite import evaluate_asset
    from distill3d.toyworld.gt_mesh import gt_mesh

    mesh = gt_mesh(parse_prompt("a red cube"), resolution=32, texture_size=0)
    out = evaluate_asset(mesh, "a red cube", size=48, n_ring=4, clip_model=tiny_clip, chamfer_points=1000)
    assert 0.0 <= out["clip_r_precision"]["r_precision"] <= 1.0 and out["clip_r_precision"]["n_images"] == 4
    skipped = evaluate_asset(mesh, "a red cube", size=48, n_ring=4, chamfer_points=1000)
    assert set(skipped["clip_r_precision"]) == {"skipped"}
