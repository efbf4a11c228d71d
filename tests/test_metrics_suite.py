"""The full evaluation: a ground-truth asset scores as perfect; deliberately wrong assets are flagged, each for its
own fault (other shape, other colour, a face on the back, over-saturated colours, blurred stripes)."""

import json

import pytest
import torch

from distill3d.mesh.gltf import save_glb
from distill3d.mesh.uv import bake_texture
from distill3d.metrics.saturation import saturate
from distill3d.metrics.suite import depth_error, evaluate_asset, evaluate_path, load_asset, main
from distill3d.toyworld import sdf as sdfs
from distill3d.toyworld.gt_mesh import gt_mesh
from distill3d.toyworld.vocab import COLOURS, FACE_COLOUR, STRIPE_COLOUR, parse_prompt

FAST = dict(size=64, chamfer_points=3000, gt_resolution=64, volume_resolution=48, normal_points=3000)
KEYS = {"prompt", "spec", "views", "elevation", "iou_all_views", "iou_mean", "iou_ring_mean", "iou_per_view",
        "colour_error_lab", "mean_colour_rgb", "colour_name", "colour_correct", "n_views", "size", "depth_error",
        "depth_error_per_view", "chamfer", "volume", "normals", "janus", "saturation", "sharpness", "clip_r_precision",
        "flags"}
VOLUME_KEYS = {"iou", "precision", "recall", "volume", "gt_volume", "resolution", "n_points", "bound"}
NORMAL_KEYS = {"error_deg", "error_median_deg", "error_p90_deg", "n_points", "roughness_deg", "gt_roughness_deg"}
NO_FLAGS = {"wrong_shape": False, "wrong_colour": False, "janus": False, "over_saturated": False,
            "blurry_stripes": False}


def test_depth_error_over_shared_pixels() -> None:
    mask_a, mask_b = torch.zeros(2, 4, 4), torch.zeros(2, 4, 4)
    mask_a[0, :2], mask_b[0, :3] = 1.0, 1.0  # 8 shared pixels in view 0, none in view 1
    pred = {"depth": torch.full((2, 4, 4), 2.5), "mask": mask_a}
    gt = {"depth": torch.full((2, 4, 4), 2.0), "mask": mask_b}
    gt["depth"][0, 0] = 3.0  # 4 shared pixels 0.5 closer, 4 pixels 0.5 farther
    assert depth_error(pred, gt) == (0.5, [0.5, None])


def test_ground_truth_asset_scores_perfect_and_is_json() -> None:
    prompt = "a green striped cube with a face"
    mesh = gt_mesh(parse_prompt(prompt), resolution=64, texture_size=256)
    out = evaluate_asset(mesh, prompt, **FAST)
    json.dumps(out, allow_nan=False)
    assert set(out) == KEYS and out["n_views"] == 10 and len(out["iou_per_view"]) == 10
    assert [v["kind"] for v in out["views"]][-2:] == ["top", "bottom"]
    assert out["iou_all_views"] == out["iou_mean"] == pytest.approx(sum(out["iou_per_view"]) / 10)
    assert out["iou_all_views"] > 0.95 and out["iou_ring_mean"] > 0.95 and out["colour_correct"]
    assert out["colour_error_lab"] < 5 and out["depth_error"] < 0.01 and out["chamfer"]["chamfer"] < 0.02
    assert set(out["volume"]) == VOLUME_KEYS and out["volume"]["iou"] > 0.98 and out["volume"]["n_points"] == 48**3
    assert set(out["normals"]) == NORMAL_KEYS and out["normals"]["error_deg"] < 3 and out["normals"]["n_points"] == 3000
    assert out["normals"]["roughness_deg"] < 3 and out["normals"]["gt_roughness_deg"] < 3
    assert out["janus"]["applicable"] and out["janus"]["rate_back"] == 0.0 and out["janus"]["rate_side"] == 0.0
    assert abs(out["saturation"]["excess"]) < 0.02
    assert out["sharpness"]["applicable"] and 0.8 < out["sharpness"]["stripe_energy_ratio"] < 1.25
    assert set(out["clip_r_precision"]) == {"skipped"}
    assert out["flags"] == NO_FLAGS


def test_wrong_shape_and_wrong_colour_are_flagged() -> None:
    cube = gt_mesh(parse_prompt("a orange cube"), resolution=48, texture_size=0)
    right = evaluate_asset(cube, "a orange cube", **FAST)
    shape = evaluate_asset(cube, "a orange sphere", **FAST)
    assert shape["iou_all_views"] < right["iou_all_views"] - 0.1
    assert shape["chamfer"]["chamfer"] > 3 * right["chamfer"]["chamfer"]
    assert shape["depth_error"] > 5 * right["depth_error"]
    assert shape["volume"]["iou"] < right["volume"]["iou"] - 0.2
    assert shape["normals"]["error_deg"] > 5 * right["normals"]["error_deg"]
    assert shape["normals"]["roughness_deg"] == right["normals"]["roughness_deg"]  # the same mesh: GT-free
    assert shape["flags"]["wrong_shape"] and not shape["flags"]["wrong_colour"] and not right["flags"]["wrong_shape"]
    colour = evaluate_asset(cube, "a blue cube", **FAST)
    assert not colour["colour_correct"] and colour["colour_name"] == "orange" and colour["colour_error_lab"] > 50
    assert colour["flags"]["wrong_colour"] and not colour["flags"]["wrong_shape"]


def test_face_painted_on_the_back_is_janus() -> None:
    prompt = "a red sphere with a face"
    spec = parse_prompt(prompt)

    def two_faced(p: torch.Tensor) -> torch.Tensor:
        out = sdfs.albedo(spec, p)
        out[sdfs.face_mask(p * torch.tensor([-1.0, 1.0, -1.0]))] = torch.tensor(FACE_COLOUR)
        return out

    mesh = bake_texture(gt_mesh(spec, resolution=48, texture_size=256), two_faced, size=256)
    out = evaluate_asset(mesh, prompt, **FAST)
    assert out["janus"]["rate_back"] == 1.0 and out["janus"]["rate"] > 0 and out["flags"]["janus"]
    assert out["iou_all_views"] > 0.95 and out["colour_correct"] and not out["flags"]["wrong_shape"]


def test_over_saturated_and_blurred_textures_are_flagged() -> None:
    spec = parse_prompt("a purple striped sphere")
    mesh = gt_mesh(spec, resolution=48, texture_size=0)
    loud = gt_mesh(spec, resolution=48, texture_size=0)
    loud.vertex_colors = saturate(loud.vertex_colors, 0.2)
    out = evaluate_asset(loud, "a purple striped sphere", **FAST)
    assert out["saturation"]["excess"] > 0.05 and out["flags"]["over_saturated"]
    assert not out["flags"]["blurry_stripes"] and out["colour_correct"]
    smeared = gt_mesh(spec, resolution=48, texture_size=0)  # stripes at a quarter of their contrast
    stripe_mean = 0.5 * (torch.tensor(COLOURS["purple"]) + torch.tensor(STRIPE_COLOUR))
    smeared.vertex_colors = 0.25 * mesh.vertex_colors + 0.75 * stripe_mean
    blur = evaluate_asset(smeared, "a purple striped sphere", **FAST)
    assert blur["sharpness"]["stripe_energy_ratio"] < 0.3 and blur["flags"]["blurry_stripes"]
    assert blur["sharpness"]["psnr"] < evaluate_asset(mesh, "a purple striped sphere", **FAST)["sharpness"]["psnr"]


def test_evaluate_path_reads_a_glb_or_an_asset_directory(tmp_path, capsys) -> None:
    prompt = "a yellow cone"
    mesh = gt_mesh(parse_prompt(prompt), resolution=40, texture_size=0)
    save_glb(mesh, tmp_path / "asset" / "mesh.glb")
    save_glb(mesh, tmp_path / "other.glb")
    from_dir = evaluate_path(tmp_path / "asset", prompt, **FAST)
    from_file = evaluate_path(tmp_path / "other.glb", prompt, **FAST)
    assert from_dir["asset"].endswith("asset") and from_dir["iou_all_views"] == from_file["iou_all_views"] > 0.9
    assert from_dir["volume"] == from_file["volume"] and from_dir["normals"] == from_file["normals"]
    assert torch.equal(load_asset(tmp_path / "asset").faces, load_asset(tmp_path / "other.glb").faces)
    with pytest.raises(FileNotFoundError):
        load_asset(tmp_path)  # a directory without mesh.glb
    assert main(["--asset", str(tmp_path / "other.glb"), "--prompt", prompt, "--size", "32", "--n-ring", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_views"] == 6 and printed["flags"]["wrong_shape"] is False
    assert main(["--asset", str(tmp_path / "nothing.glb"), "--prompt", prompt]) == 2
    assert main(["--asset", str(tmp_path / "other.glb"), "--prompt", "a dragon"]) == 2
    assert "error:" in capsys.readouterr().err
