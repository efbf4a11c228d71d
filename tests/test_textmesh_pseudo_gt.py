"""TextMesh texture stages: canonical views and tiling, the pseudo-GT stage keeping the background outside the
masks (real toy prior), and texture fine-tuning reducing the error to a target."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from distill3d.texture.canonical import canonical_cameras, tile_2x2, untile_2x2

REPO = Path(__file__).resolve().parents[1]
PRIOR = Path(os.environ.get("DISTILL3D_TOY_PRIOR", REPO / "models" / "toy_prior"))
needs_prior = pytest.mark.skipif(not (PRIOR / "prior.json").is_file(), reason=f"no toy prior at {PRIOR}")


def _sphere_mesh(colour=(0.2, 0.3, 0.8)):
    import trimesh

    from distill3d.mesh.types import TexturedMesh
    from distill3d.mesh.uv import bake_texture, unwrap

    s = trimesh.creation.icosphere(2, 0.6)
    mesh = TexturedMesh(torch.as_tensor(s.vertices, dtype=torch.float32), torch.as_tensor(s.faces))
    return bake_texture(unwrap(mesh, resolution=64), lambda p: torch.tensor(colour).expand(len(p), 3), size=64)


def test_canonical_cameras_and_tiling() -> None:
    cams = canonical_cameras(elevation=15.0)
    assert cams.view_phrases() == ["front", "side", "back", "side"]
    x = torch.rand(4, 5, 6, 3)
    tile = tile_2x2(x)
    assert tile.shape == (10, 12, 3) and torch.equal(tile[:5, 6:], x[1]) and torch.equal(tile[5:, :6], x[2])
    assert torch.equal(untile_2x2(tile), x)


@needs_prior
@pytest.mark.parametrize("layout", ["per_view", "tiled"])
def test_pseudo_gt_stage_keeps_background_outside_masks(tmp_path, layout) -> None:
    from safetensors.torch import load_file

    from distill3d.mesh.gltf import save_glb
    from stages.core.execute import execute
    from stages.core.params import load_params
    from stages.core.protocol import get_stage

    save_glb(_sphere_mesh(), tmp_path / "mesh" / "mesh.glb")
    rcv = get_stage("render_canonical_views")
    canon = execute(rcv, load_params(rcv, None, None, ["size=32", "ssaa=1"]), {"mesh": tmp_path / "mesh"},
                    tmp_path / "canonical")
    views = load_file(str(canon / "views.safetensors"))
    assert views["rgb"].shape == (4, 32, 32, 3) and views["depth"].shape == (4, 32, 32)
    assert (views["depth"][views["mask"] > 0.5] > 0).all() and (views["depth"][views["mask"] == 0] == 0).all()
    pg = get_stage("pseudo_gt")
    params = load_params(pg, None, None, ["prompt=a blue sphere", "refine.steps=4", "refine.strength=0.75",
                                          f"refine.layout={layout}"])
    out = execute(pg, params, {"canonical": canon, "prior": PRIOR}, tmp_path / "pseudo")
    res = load_file(str(out / "pseudo_gt.safetensors"))
    keep = res["keep"]
    assert torch.equal(keep, views["mask"] > 0.5) and 0.05 < keep.float().mean() < 0.6
    assert torch.equal(res["pseudo_gt"][~keep], views["rgb"][~keep])  # background untouched
    assert torch.equal(res["pseudo_gt"][keep], res["refined"][keep])  # object from the prior
    assert (res["refined"][keep] - views["rgb"][keep]).abs().mean() > 1e-3  # and the prior changed it
    assert (out / "pseudo_gt.png").is_file()


@needs_prior
def test_pseudo_gt_samples_average_out_the_sampling_noise() -> None:
    from distill3d.priors.loading import load_prior
    from distill3d.texture.pseudo_gt import PseudoGTConfig, pseudo_ground_truth
    from distill3d.texture.render import FragmentCache, shade_texture

    prior = load_prior(PRIOR)
    cache = FragmentCache.build(_sphere_mesh(), canonical_cameras(), 32)
    views, masks = shade_texture(_sphere_mesh().texture, cache)["rgb"], cache.mask

    def spread(samples: int) -> float:  # how far two seeds' pseudo-GTs lie apart
        cfg = PseudoGTConfig(steps=4, strength=0.75, guidance_scale=1.0, samples=samples)
        a, b = (pseudo_ground_truth(prior, views, masks, "a blue sphere", cfg,
                                    generator=torch.Generator().manual_seed(s))["refined"] for s in (0, 1))
        return float((a - b).abs().mean())

    assert spread(4) < 0.75 * spread(1)  # measured: about half, as 1 / sqrt(4)


@pytest.mark.parametrize("mse_resolution", [None, 16])
def test_texture_finetune_fits_target_views(mse_resolution) -> None:
    from distill3d.texture.finetune import TextureFinetuneConfig, finetune_texture
    from distill3d.texture.render import FragmentCache, shade_texture

    mesh = _sphere_mesh((0.5, 0.5, 0.5))
    cams = canonical_cameras()
    target_tex = torch.zeros_like(mesh.texture)
    target_tex[..., 0] = 0.9  # red
    target = shade_texture(target_tex, FragmentCache.build(mesh, cams, 32))["rgb"]
    cfg = TextureFinetuneConfig(steps=40, lr=0.1, lambda_sds=0.0, ssaa=1, mse_resolution=mse_resolution)
    tex, hist = finetune_texture(mesh, cams, target, None, "a red sphere", cfg)
    mse = hist["losses"]["loss_mse"]
    assert mse[-1] < 0.1 * mse[0]
    seen = FragmentCache.build(mesh, cams, 32)
    after = shade_texture(tex, seen, mode="albedo")["rgb"][seen.mask > 0]
    assert after[:, 0].mean() > 0.75 and after[:, 1].mean() < 0.2


def test_texture_tv_smooths_what_noisy_targets_paint_in() -> None:
    from distill3d.texture.finetune import TextureFinetuneConfig, finetune_texture, texture_tv
    from distill3d.texture.render import FragmentCache, shade_texture

    mesh = _sphere_mesh((0.5, 0.5, 0.5))
    assert float(texture_tv(mesh.texture)) < 1e-6  # constant colour: no variation
    cams = canonical_cameras()
    clean = shade_texture(mesh.texture, FragmentCache.build(mesh, cams, 32))["rgb"]
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)

    def tv_after(lambda_tv: float) -> float:
        cfg = TextureFinetuneConfig(steps=30, lr=0.1, lambda_sds=0.0, ssaa=1, lambda_tv=lambda_tv)
        return float(texture_tv(finetune_texture(mesh, cams, noisy, None, "a sphere", cfg)[0]))

    assert tv_after(0.2) < 0.5 * tv_after(0.0)
