"""Face detection for the Janus metric: checked on ground-truth renders first, then on a two-faced asset."""

import pytest
import torch

from distill3d.cameras import ring_cameras, spherical_cameras
from distill3d.mesh.render import render_mesh
from distill3d.mesh.uv import bake_texture
from distill3d.metrics.janus import FaceDetector, janus_from_renders, view_kinds
from distill3d.toyworld import sdf as sdfs
from distill3d.toyworld.gt_mesh import gt_mesh
from distill3d.toyworld.render import render_gt
from distill3d.toyworld.vocab import FACE_COLOUR, parse_prompt

DETECT = FaceDetector()
FRONT_AND_BACK = spherical_cameras([0.0, 135.0, 180.0, 225.0], [15.0] * 4)


@pytest.mark.parametrize("prompt", [
    "a blue sphere with a face", "a white striped cube with a face", "a yellow cylinder with a face",
    "a purple striped cone with a face", "a red torus with a face",
])
def test_detector_finds_the_face_in_front_views_and_not_in_back_views(prompt: str) -> None:
    spec = parse_prompt(prompt)
    cams = FRONT_AND_BACK
    if spec.shape == "torus":
        # From 15 degrees up, a flat torus shows its front half's eyes over the rim of the hole even from behind
        # (see test_torus_shows_its_eyes_from_behind_and_is_not_janus_against_itself); level views hide them.
        cams = spherical_cameras([0.0, 135.0, 180.0, 225.0], [0.0] * 4)
    gt = render_gt(spec, cams, 64, mode="albedo")
    found = DETECT.detect(gt["rgb"], gt["mask"])
    assert found[0]["present"] and found[0]["n_features"] >= 2 and found[0]["score"] > 0.02, found[0]
    for back in found[1:]:
        assert not back["present"] and back["score"] < 0.01, back
    # the same object without a face has no face from anywhere, stripes included
    plain = render_gt(parse_prompt(prompt.replace(" with a face", "")), ring_cameras(8, 15.0, True), 64, "albedo")
    assert not any(v["present"] for v in DETECT.detect(plain["rgb"], plain["mask"]))


def test_torus_shows_its_eyes_from_behind_and_is_not_janus_against_itself() -> None:
    spec = parse_prompt("a green torus with a face")
    gt = render_gt(spec, FRONT_AND_BACK, 64, mode="albedo")
    assert [v["present"] for v in DETECT.detect(gt["rgb"], gt["mask"])] == [True, True, True, True]
    result = janus_from_renders(gt, gt, view_kinds(FRONT_AND_BACK))
    assert result["rate_back"] == 0.0 and result["janus_views"] == []


def test_detector_on_synthetic_marks() -> None:
    size = 48
    ij = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"), -1).float() + 0.5
    disc = (ij - size / 2).norm(dim=-1) < 20
    rgb = torch.ones(size, size, 3)
    rgb[disc] = torch.tensor([0.9, 0.8, 0.1])
    eye_l = (ij - torch.tensor([20.0, 17.0])).norm(dim=-1) < 3
    eye_r = (ij - torch.tensor([20.0, 31.0])).norm(dim=-1) < 3
    two_eyes, one_eye, grey_eyes = rgb.clone(), rgb.clone(), rgb.clone()
    two_eyes[eye_l | eye_r] = 0.05
    one_eye[eye_l] = 0.05
    grey_eyes[eye_l | eye_r] = 0.2  # a blurry, greyish face (L* ~ 21) still counts
    masks = disc.float()[None].expand(4, size, size)
    found = DETECT.detect(torch.stack([two_eyes, one_eye, grey_eyes, rgb]), masks)
    assert [v["present"] for v in found] == [True, False, True, False]
    assert found[0]["n_features"] == 2 and found[1]["n_features"] == 1 and found[3]["score"] == 0.0
    # nothing is a feature on an empty view
    assert DETECT.detect(torch.ones(1, 8, 8, 3), torch.zeros(1, 8, 8)) == [
        {"present": False, "score": 0.0, "n_features": 0}]


def test_view_kinds_of_the_evaluation_ring() -> None:
    kinds = view_kinds(ring_cameras(8, 15.0, with_top_bottom=True))
    assert kinds == ["front", "front", "side", "back", "back", "back", "side", "front", "top", "bottom"]


def _mirrored_face(spec):
    """Albedo with the face also painted on the back (its mirror image through the Y axis): a Janus asset."""
    def colour(p: torch.Tensor) -> torch.Tensor:
        out = sdfs.albedo(spec, p)
        out[sdfs.face_mask(p * torch.tensor([-1.0, 1.0, -1.0]))] = torch.tensor(FACE_COLOUR)
        return out
    return colour


def test_janus_rate_flags_a_face_painted_on_the_back_and_not_the_ground_truth() -> None:
    spec = parse_prompt("a red sphere with a face")
    cams = ring_cameras(8, 15.0, with_top_bottom=True)
    kinds = view_kinds(cams)
    gt = render_gt(spec, cams, 64, mode="albedo")
    honest = gt_mesh(spec, resolution=48, texture_size=256)
    two_faced = bake_texture(honest, _mirrored_face(spec), size=256)
    good = janus_from_renders(render_mesh(honest, cams, 64, mode="albedo"), gt, kinds)
    assert good["applicable"] and good["rate_back"] == 0.0 and good["rate_side"] == 0.0 and good["rate"] == 0.0
    assert good["per_view"][0]["pred_face"] and good["per_view"][0]["gt_face"]
    bad = janus_from_renders(render_mesh(two_faced, cams, 64, mode="albedo"), gt, kinds)
    assert bad["rate_back"] == 1.0 and bad["rate_side"] == 0.0 and bad["janus_views"] == [3, 4, 5]
    assert all(bad["per_view"][i]["pred_score"] > 0.02 and bad["per_view"][i]["gt_score"] < 0.01 for i in (3, 4, 5))
    # turned round (face only on the back): Janus from behind, and the front shows no face
    turned = gt_mesh(spec, resolution=48, texture_size=0)
    turned.vertices = turned.vertices * torch.tensor([-1.0, 1.0, -1.0])  # 180 degrees about +Y
    res = janus_from_renders(render_mesh(turned, cams, 64, mode="albedo"), gt, kinds)
    assert res["rate_back"] == 1.0 and not res["per_view"][0]["pred_face"]
    with pytest.raises(ValueError):
        janus_from_renders(gt, gt, kinds[:3])
