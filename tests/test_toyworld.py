"""Toy world: grammar, analytic SDFs and the ground-truth renderer."""

import math

import pytest
import torch

from distill3d.cameras import camera_rays, ring_cameras, spherical_cameras, view_phrase
from distill3d.toyworld import sdf as sdfs
from distill3d.toyworld.render import render_gt, render_gt_batch
from distill3d.toyworld.vocab import SHAPES, ObjectSpec, PromptError, parse_prompt


def test_parse_prompt_round_trips_every_caption():
    for spec in [ObjectSpec("cube", "red"), ObjectSpec("torus", "blue", "striped", True)]:
        for view in (None, "front", "back"):
            assert parse_prompt(spec.caption(view)) == spec


@pytest.mark.parametrize(
    "prompt, needle",
    [("a red dragon", "dragon"), ("", "empty prompt"), ("a red cube a sphere", "exactly one shape"),
     ("a red blue cube", "colours"), ("a red cube!", "!")],
)
def test_bad_prompts_name_the_problem_and_the_known_words(prompt, needle):
    with pytest.raises(PromptError) as err:
        parse_prompt(prompt)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_view_phrases_follow_dreamfusion():
    assert view_phrase(0, 10) == "front" and view_phrase(350, 10) == "front"
    assert view_phrase(90, 10) == "side" and view_phrase(-100, 0) == "side"
    assert view_phrase(180, 10) == "back" and view_phrase(-150, 10) == "back"
    assert view_phrase(30, 75) == "overhead"


@pytest.mark.parametrize("shape", SHAPES)
def test_sdfs_are_distances(shape):
    """|grad sdf| = 1 away from the surface's medial axis, and the surface lies inside the bounding sphere."""
    p = (torch.rand(4000, 3) * 2 - 1).requires_grad_(True)
    d = sdfs.sdf(shape, p)
    (g,) = torch.autograd.grad(d.sum(), p)
    near = d.detach().abs() > 0.05
    assert (g.norm(dim=-1)[near] - 1).abs().median() < 1e-3
    outside = p.detach().norm(dim=-1) > sdfs.BOUNDING_RADIUS
    assert (d.detach()[outside] > 0).all()


def test_sphere_mask_matches_analytic_disc():
    cams = spherical_cameras([0.0, 120.0], [20.0, -10.0], radius=2.6, fov=40.0)
    out = render_gt(ObjectSpec("sphere", "red"), cams, 64)
    o, d = camera_rays(cams, 64)
    # A ray hits a sphere of radius r iff its distance to the centre is below r.
    closest = (o - (o * d).sum(-1, keepdim=True) * d).norm(dim=-1)
    disc = (closest < sdfs.SPHERE_RADIUS).float()
    inter = (out["mask"] * disc).sum()
    iou = inter / (out["mask"] + disc - out["mask"] * disc).sum()
    assert iou > 0.98
    # Depth is the distance along the ray to the front surface.
    hit = disc.bool() & (out["mask"] > 0)
    b = (o * d).sum(-1)
    t = -b - torch.sqrt(b * b - ((o * o).sum(-1) - sdfs.SPHERE_RADIUS**2)).nan_to_num(0)
    assert (out["depth"][hit] - t[hit]).abs().max() < 1e-2


def test_render_colours_background_and_albedo_mode():
    cams = ring_cameras(4)
    out = render_gt(ObjectSpec("cube", "blue"), cams, 32, mode="albedo")
    bg = out["mask"] == 0
    assert torch.allclose(out["rgb"][bg], torch.ones(3))
    obj = out["rgb"][out["mask"] == 1]
    assert torch.allclose(obj.mean(0), torch.tensor([0.10, 0.25, 0.85]), atol=1e-3)


def test_face_is_on_the_front_only():
    cams = ring_cameras(8, elevation=10.0)
    out = render_gt(ObjectSpec("sphere", "yellow", face=True), cams, 64, mode="albedo")
    dark = ((out["rgb"].sum(-1) < 0.3) & (out["mask"] > 0)).float().mean(dim=(1, 2))
    assert dark[0] > 0.02  # front view shows the face
    assert dark[4] == 0  # back view does not
    assert dark[0] > dark[2] and dark[0] > dark[6]


def test_batch_renders_different_objects_per_camera():
    cams = ring_cameras(2)
    specs = [ObjectSpec("sphere", "red"), ObjectSpec("torus", "green")]
    out = render_gt_batch(specs, cams, 32, ssaa=2)
    assert out["mask"][0].sum() > out["mask"][1].sum()  # a sphere covers more than a flat torus
    frac = out["mask"][(out["mask"] > 0) & (out["mask"] < 1)]
    assert frac.numel() > 0  # anti-aliased edges
    assert math.isclose(float(out["rgb"][1][out["mask"][1] == 1].mean(0)[1]), 0.65 * 1.0, abs_tol=0.35)
