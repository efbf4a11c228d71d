"""Asset-vs-ground-truth evaluation: on synthetic renders, on ground-truth renders, and on meshes end to end."""

import json

import pytest
import torch

from distill3d.cameras import ring_cameras
from distill3d.metrics.evaluate import dominant_colour, evaluate_mesh, evaluate_renders
from distill3d.toyworld.render import render_gt
from distill3d.toyworld.vocab import COLOURS, FACE_COLOUR, STRIPE_COLOUR, parse_prompt

KEYS = {"iou_mean", "iou_per_view", "colour_error_lab", "mean_colour_rgb", "colour_name", "colour_correct",
        "n_views", "size"}


def _disc_render(colour, size: int = 16, radius: float = 5.0, stripe=None, face_rows: int = 0):
    """A (1, size, size) disc of ``colour`` on white, optional white stripes every other row / black top rows."""
    ij = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"), -1).float() + 0.5
    mask = ((ij - size / 2).norm(dim=-1) < radius).float()
    rgb = torch.ones(size, size, 3)
    albedo = torch.tensor(colour).expand(size, size, 3).clone()
    if stripe is not None:
        albedo[::2] = torch.tensor(stripe)
    if face_rows:
        albedo[size // 2 - face_rows // 2: size // 2 + face_rows // 2] = torch.tensor(FACE_COLOUR)
    rgb = torch.where(mask[..., None] > 0, albedo, rgb)
    return {"rgb": rgb[None], "mask": mask[None]}


def test_dominant_colour_ignores_stripes_and_face() -> None:
    red, blue = COLOURS["red"], COLOURS["blue"]
    striped = _disc_render(red, stripe=STRIPE_COLOUR)
    pixels = striped["rgb"][striped["mask"] > 0.5]
    assert dominant_colour(pixels, striped=True)[0] == "red"
    name, mean = dominant_colour(pixels, striped=True)
    assert torch.allclose(mean, torch.tensor(red))
    # all-white stripes on a white body: white
    white = _disc_render(COLOURS["white"], stripe=STRIPE_COLOUR)
    assert dominant_colour(white["rgb"][white["mask"] > 0.5], striped=True)[0] == "white"
    # a thick black face band never wins
    faced = _disc_render(blue, face_rows=6)
    pix = faced["rgb"][faced["mask"] > 0.5]
    assert (pix.sum(-1) < 0.5).float().mean() > 0.4
    assert dominant_colour(pix, striped=False)[0] == "blue"
    assert dominant_colour(torch.zeros(0, 3), striped=False) == (None, None)


def test_evaluate_renders_synthetic_scores_and_json() -> None:
    spec = parse_prompt("a red sphere")
    gt = _disc_render(COLOURS["red"])
    same = evaluate_renders(gt, gt, spec)
    assert set(same) == KEYS
    assert same["iou_mean"] == 1.0 and same["colour_error_lab"] == pytest.approx(0.0, abs=1e-4)
    assert same["colour_name"] == "red" and same["colour_correct"] and same["n_views"] == 1 and same["size"] == 16
    json.dumps(same)
    smaller_green = _disc_render(COLOURS["green"], radius=3.0)
    worse = evaluate_renders(smaller_green, gt, spec)
    assert worse["iou_mean"] < 0.5 and worse["colour_error_lab"] > 50
    assert worse["colour_name"] == "green" and not worse["colour_correct"]
    empty = {"rgb": torch.ones(1, 16, 16, 3), "mask": torch.zeros(1, 16, 16)}
    nothing = evaluate_renders(empty, gt, spec)
    assert nothing["iou_mean"] == 0.0 and nothing["colour_name"] is None and nothing["colour_error_lab"] is None
    json.dumps(nothing)


def test_evaluate_renders_on_ground_truth_renders() -> None:
    cams = ring_cameras(2, 15.0)
    spec = parse_prompt("a green striped cube with a face")
    gt = render_gt(spec, cams, 24, mode="albedo")
    perfect = evaluate_renders(gt, gt, spec)
    assert perfect["iou_mean"] == 1.0 and perfect["colour_name"] == "green" and perfect["colour_correct"]
    other = render_gt(parse_prompt("a orange torus"), cams, 24, mode="albedo")
    wrong = evaluate_renders(other, gt, spec)
    assert wrong["iou_mean"] < 0.8 and wrong["colour_name"] == "orange" and not wrong["colour_correct"]


def test_evaluate_mesh_ground_truth_mesh_scores_high_and_wrong_meshes_lower() -> None:
    from distill3d.toyworld.gt_mesh import gt_mesh

    prompt = "a yellow striped sphere with a face"  # stripes and face exercise the colour naming
    mesh = gt_mesh(parse_prompt(prompt), resolution=48, texture_size=0)  # vertex colours: no UV bake, fast
    good = evaluate_mesh(mesh, prompt, n_views=4, size=48)
    json.dumps(good)
    assert set(good) == KEYS and good["n_views"] == 4 and good["size"] == 48 and len(good["iou_per_view"]) == 4
    assert good["iou_mean"] > 0.95 and min(good["iou_per_view"]) > 0.9
    assert good["colour_name"] == "yellow" and good["colour_correct"] and good["colour_error_lab"] < 10.0
    wrong_colour = evaluate_mesh(mesh, "a red striped sphere with a face", n_views=4, size=48)
    assert wrong_colour["iou_mean"] > 0.95 and wrong_colour["colour_name"] == "yellow"
    assert not wrong_colour["colour_correct"] and wrong_colour["colour_error_lab"] > 30.0
    wrong_shape = evaluate_mesh(mesh, "a yellow striped cone with a face", n_views=4, size=48)
    assert wrong_shape["iou_mean"] < good["iou_mean"] - 0.3 and wrong_shape["colour_correct"]
