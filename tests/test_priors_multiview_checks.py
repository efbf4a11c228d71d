"""The multi-view sample checks: fed ground-truth 4-view renders on solid backgrounds as if they were samples, they
must call every sample consistent and right, and find the face on the front view only; a Janus sample (a face
painted on the back) and an inconsistent one (another shape in one view) must be caught. Plus the check stage's
wiring on a tiny random prior."""

from __future__ import annotations

import json

import pytest
import torch

import distill3d.priors.multiview_checks as mc
from distill3d.cameras import spherical_cameras
from distill3d.toyworld.render import render_gt_batch
from distill3d.toyworld.vocab import ObjectSpec, parse_prompt

CAPTIONS = ["a yellow sphere with a face", "a blue cube with a face", "a green cone"]


class _FakePrior:
    views_per_sample = 4
    device = torch.device("cpu")


def _ground_truth_sampler(size=32, tamper=None):
    """A stand-in for sample_images returning ground-truth renders of each prompt from the given cameras, over one
    random solid background per group of 4; ``tamper(images, prompts)`` may edit them."""

    def sample(prior, prompts, steps, guidance_scale, generator, cond):
        specs = [parse_prompt(p) for p in prompts]
        out = render_gt_batch(specs, cond.cameras, size, ssaa=2)
        rgb, m = out["rgb"].permute(0, 3, 1, 2), out["mask"][:, None]
        bg = torch.rand(len(prompts) // 4, 3, generator=torch.Generator().manual_seed(1)).repeat_interleave(4, 0)
        bg = torch.where(torch.arange(len(prompts))[:, None] % 8 < 4, torch.ones(3), bg)  # white and coloured
        images = rgb + (1 - m) * (bg[:, :, None, None] - 1)
        return tamper(images, prompts) if tamper else images

    return sample


def test_ground_truth_passes_every_check(monkeypatch) -> None:
    monkeypatch.setattr(mc, "sample_images", _ground_truth_sampler())
    images, report = mc.check_multiview_samples(_FakePrior(), CAPTIONS, per_caption=2)
    assert images.shape == (6, 4, 3, 32, 32)
    assert report["consistent"] == 1.0 and report["right"] == 1.0
    assert report["face_front_only"] == 1.0 and report["face_front"] == 1.0 and report["janus_views"] == 0.0
    assert report["iou_true_shape"] > 0.9
    assert report["gt_faces"]["a yellow sphere with a face"][0] and not report["gt_faces"]["a yellow sphere with a face"][2]
    json.dumps(report)


def test_janus_and_inconsistent_samples_are_caught(monkeypatch) -> None:
    def tamper(images, prompts):
        images = images.clone()
        front = images[0]  # sample 0 ("a yellow sphere with a face"): its back view shows the front's face
        images[2] = front
        cams = spherical_cameras([180.0], [15.0])  # sample 2 ("a blue cube with a face"): a back view of a torus
        torus = render_gt_batch([ObjectSpec("torus", "blue")], cams, 32, ssaa=2)["rgb"].permute(0, 3, 1, 2)
        images[8 + 2] = torus[0]
        return images

    monkeypatch.setattr(mc, "sample_images", _ground_truth_sampler(tamper=tamper))
    _, report = mc.check_multiview_samples(_FakePrior(), CAPTIONS, per_caption=2)
    s0, s2 = report["samples"][0], report["samples"][2]
    assert s0["views"][2]["face"] and s0["janus_views"] == 1 and not s0["face_front_only"]
    assert not s2["consistent"] and s2["views"][2]["shape"] == "torus"
    assert report["face_front_only"] == 0.75 and report["janus_views"] == pytest.approx(1 / 12)  # 1 of 4, 1 of 12


def test_background_mask_finds_the_object_on_any_solid_colour() -> None:
    img = torch.zeros(2, 3, 16, 16)
    img[0] += torch.tensor([0.2, 0.7, 0.9])[:, None, None]
    img[1] += 1.0
    img[:, :, 5:11, 4:9] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    m = mc.background_mask(img)
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[5:11, 4:9] = True
    assert torch.equal(m[0], expected) and torch.equal(m[1], expected)


def test_check_stage_on_a_tiny_random_prior(tmp_path) -> None:
    from distill3d.priors.multiview import MultiViewArchitecture, MultiViewToyPrior
    from stages import check_mv_prior

    torch.manual_seed(0)
    MultiViewToyPrior.build(MultiViewArchitecture(
        resolution=16, block_out_channels=(16, 32), cross_attention_levels=(False, True), text_width=16,
        text_layers=1)).save(tmp_path / "prior")
    params = check_mv_prior.Params(captions=["a red cube with a face"], per_caption=1, steps=2)
    (tmp_path / "out").mkdir()
    metrics = check_mv_prior.run(params, {"prior": tmp_path / "prior"}, tmp_path / "out")
    assert (tmp_path / "out" / "samples.png").is_file()
    report = json.loads((tmp_path / "out" / "sample_checks.json").read_text())
    assert len(report["samples"]) == 1 and len(report["samples"][0]["views"]) == 4
    assert set(metrics) >= {"consistent", "right", "face_front_only", "janus_views", "iou_true_shape"}
