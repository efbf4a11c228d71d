"""The toy priors' sample checks, run on ground-truth renders: they find the object on a random background, name
its colour and shape, see stripes and faces where the toy world has them and not where it has none."""

from __future__ import annotations

import pytest
import torch

from distill3d.priors.toy import ToyPrior, ToyPriorArchitecture
from distill3d.priors.toy_checks import (
    CheckConfig, check_grid_images, colour_shape_rows, estimate_background, face_rate, ground_truth_views,
    object_mask, run_checks, stripe_energy,
)
from distill3d.priors.toy_training import DEFAULT_HELD_OUT
from distill3d.toyworld.dataset import composite, random_backgrounds
from distill3d.toyworld.render import render_gt_batch
from distill3d.cameras import sample_cameras
from distill3d.toyworld.vocab import parse_prompt


@pytest.mark.parametrize("size", [32, 64])
def test_object_is_segmented_from_a_random_background(size):
    gen = torch.Generator().manual_seed(0)
    cams = sample_cameras(16, generator=gen)
    specs = [parse_prompt(c) for c in ("a white cube", "a red sphere", "a blue striped torus", "a green cone")] * 4
    out = render_gt_batch(specs, cams, size, ssaa=2, background=0.0)
    bg = random_backgrounds(16, gen)
    images = composite(out["rgb"].permute(0, 3, 1, 2), out["mask"][:, None], bg)
    assert torch.allclose(estimate_background(images), bg, atol=1e-6)
    truth = out["mask"] > 0.5
    masks = object_mask(images)
    iou = (masks & truth).sum(dim=(1, 2)) / (masks | truth).sum(dim=(1, 2))
    assert float(iou.median()) > 0.9 and float((iou > 0.7).float().mean()) >= 14 / 16


@pytest.mark.parametrize("size", [32, 64])
def test_colour_and_shape_of_ground_truth_held_out_views_are_right(size):
    images, prompts = [], []
    for i, caption in enumerate(DEFAULT_HELD_OUT):
        images.append(ground_truth_views(parse_prompt(caption), "front", 8, size, seed=i))
        prompts += [caption] * 8
    rows = colour_shape_rows(torch.cat(images), prompts)
    assert sum(r["colour_ok"] and r["shape_ok"] for r in rows) >= 30  # of 32 (a background can match the object)


@pytest.mark.parametrize("size", [32, 64])
def test_stripes_are_seen_on_striped_ground_truth_and_not_on_plain(size):
    for caption in ("a blue striped cylinder", "a purple striped sphere"):
        spec = parse_prompt(caption)
        striped = stripe_energy(ground_truth_views(spec, "front", 16, size, seed=1))
        plain = stripe_energy(ground_truth_views(spec.__class__(spec.shape, spec.colour), "front", 16, size, seed=2))
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        assert mean(striped) > 10 * mean(plain), (caption, mean(striped), mean(plain))


@pytest.mark.parametrize("size", [32, 64])
def test_faces_are_found_in_front_views_and_not_in_back_views(size):
    spec = parse_prompt("an orange sphere with a face")
    front, _ = face_rate(ground_truth_views(spec, "front", 32, size, seed=3))
    back, _ = face_rate(ground_truth_views(spec, "back", 32, size, seed=4))
    assert front >= 0.9 and back <= 0.05, (front, back)
    no_face, _ = face_rate(ground_truth_views(parse_prompt("an orange sphere"), "front", 32, size, seed=5))
    assert no_face <= 0.05  # (a dark background next to the shaded rim can pass for a feature, rarely)


def test_run_checks_reports_every_bar():
    torch.manual_seed(0)
    prior = ToyPrior.build(ToyPriorArchitecture(resolution=16, block_out_channels=(16, 32),
                                                cross_attention_levels=(False, True), text_width=32,
                                                text_layers=1)).eval()
    cfg = CheckConfig(captions=["a purple cube"], per_caption=2, stripe_captions=["a blue striped cylinder"],
                      face_captions=["an orange sphere with a face"], samples=2, steps=2)
    images, report = run_checks(prior, cfg)
    assert images["colour_shape"].shape == (2, 3, 16, 16)
    assert set(report["bars"]) == {
        "colour_and_shape_ok", "stripe_ratio_to_ground_truth: a blue striped cylinder",
        "stripe_ratio_to_plain: a blue striped cylinder", "face_front_rate: an orange sphere with a face",
        "face_back_rate: an orange sphere with a face"}
    assert report["all_met"] == all(b["met"] for b in report["bars"].values())
    assert report["stripes"][0]["plain_caption"] == "a blue cylinder"
    assert 0.0 <= report["faces"][0]["front_rate"] <= 1.0
    cells, labels = check_grid_images(images, report)
    assert cells.shape[0] == len(labels) == 2 + 3 * 2 + 4 * 2 and cells.shape[-1] == 3
    with pytest.raises(ValueError, match="striped"):
        run_checks(prior, cfg.model_copy(update={"stripe_captions": ["a blue cylinder"]}))
