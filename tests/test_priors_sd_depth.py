"""A depth-conditioned Stable Diffusion (SD 2 depth layout: a 5-channel UNet) as TextMesh's pseudo-GT prior, on a
tiny random model built with the real diffusers classes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from distill3d.priors.base import Conditioning, PriorError
from distill3d.priors.stable_diffusion import disparity
from distill3d.priors.loading import load_prior
from distill3d.texture.pseudo_gt import PseudoGTConfig, pseudo_ground_truth
from tiny_models import TINY_RESOLUTION, build_tiny_sd

H = 2 * TINY_RESOLUTION  # canonical views larger than the prior, as in the stage


@pytest.fixture(scope="module")
def sd_depth(tmp_path_factory):
    return load_prior(build_tiny_sd(tmp_path_factory.mktemp("sd_depth"), "epsilon", depth=True))


def _views(n: int = 4, seed: int = 0):
    """n views of a disc in front of a white background: rgb (n, H, H, 3), mask (n, H, H), depth (n, H, H)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, H), indexing="ij")
    mask = ((xx**2 + yy**2) < 0.5).float().expand(n, H, H).clone()
    depth = torch.where(mask > 0, 2.0 + 0.5 * xx + 0.1 * torch.rand(n, H, H, generator=g), torch.zeros(n, H, H))
    rgb = torch.where(mask[..., None] > 0, torch.tensor([0.8, 0.2, 0.2]), torch.ones(3))
    return rgb, mask, depth


def test_a_five_channel_unet_makes_a_depth_conditioned_prior_that_asks_for_depth(sd_depth) -> None:
    assert sd_depth.depth_conditioned and sd_depth.unet.config.in_channels == 5
    x = torch.randn(2, 4, TINY_RESOLUTION // 2, TINY_RESOLUTION // 2)
    text = sd_depth.encode_text(["a red cube", "a red cube"])
    t = torch.tensor([500, 500])
    with pytest.raises(PriorError, match="needs the views' depth"):
        sd_depth.predict_noise(x, t, text)
    _, mask, depth = _views(2)
    cond = Conditioning(depth=depth, mask=mask)
    with torch.no_grad():
        eps = sd_depth.predict_noise(x, t, text, cond)
        cfg = sd_depth.predict_noise_cfg(x, t, sd_depth.embed(["a red cube"] * 2), 3.0, cond)[0]  # a 2B batch
        flipped = sd_depth.predict_noise(x, t, text, Conditioning(depth=depth.flip(-1), mask=mask.flip(-1)))
    assert eps.shape == x.shape and cfg.shape == x.shape
    assert (eps - flipped).abs().max() > 1e-4  # the depth reaches the UNet


def test_depth_channel_is_what_diffusers_depth2img_pipeline_feeds_its_unet(sd_depth) -> None:
    from diffusers import StableDiffusionDepth2ImgPipeline

    _, mask, depth = _views(3, seed=1)
    h = TINY_RESOLUTION // 2
    ours = sd_depth.depth_channel(torch.Size((6, 4, h, h)), Conditioning(depth=depth, mask=mask))  # CFG batch of 3
    inverse = disparity(depth, mask)[:, 0]
    # the pipeline's own preparation of a given (estimated) depth map: resize to the latents, scale to [-1, 1]
    fake = SimpleNamespace(vae_scale_factor=sd_depth.vae_scale_factor)
    image = torch.zeros(3, 3, TINY_RESOLUTION, TINY_RESOLUTION)
    ref = StableDiffusionDepth2ImgPipeline.prepare_depth_map(fake, image, inverse, 3, True, torch.float32, "cpu")
    # (the pipeline resizes from the map's size to image size / 8; ours from the same map to the same size)
    assert ref.shape == ours.shape == (6, 1, h, h)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    near = inverse[0][mask[0] > 0.5].max()
    assert near == pytest.approx(1 / depth[0][mask[0] > 0.5].min()) and inverse[0][mask[0] < 0.5].abs().max() == 0


def test_pseudo_gt_with_a_depth_prior_reads_the_depth_and_keeps_the_background(sd_depth) -> None:
    rgb, mask, depth = _views()
    cfg = PseudoGTConfig(strength=0.6, guidance_scale=3.0, steps=4)

    def run(d):
        torch.manual_seed(0)  # the VAE's posterior sample draws from the global generator
        return pseudo_ground_truth(sd_depth, rgb, mask, "a red cube", cfg, generator=torch.Generator().manual_seed(0),
                                   depth=d)

    a, b = run(depth), run(depth.flip(-1))
    outside = mask < 0.5
    assert torch.equal(a["pseudo_gt"][outside], rgb[outside])  # background kept
    assert (a["pseudo_gt"] - b["pseudo_gt"]).abs()[~outside].max() > 1e-3  # different depth, different refinement
    tiled = pseudo_ground_truth(sd_depth, rgb, mask, "a red cube", cfg.model_copy(update={"layout": "tiled"}),
                                generator=torch.Generator().manual_seed(0), depth=depth)
    assert tiled["pseudo_gt"].shape == rgb.shape
    with pytest.raises(PriorError, match="needs the views' depth"):  # a depth model without depth says so
        pseudo_ground_truth(sd_depth, rgb, mask, "a red cube", cfg)


def test_a_text_to_image_prior_ignores_the_depth(tmp_path) -> None:
    plain = load_prior(build_tiny_sd(tmp_path / "sd", "epsilon"))
    assert not plain.depth_conditioned
    rgb, mask, depth = _views()
    cfg = PseudoGTConfig(strength=0.6, guidance_scale=3.0, steps=3)
    torch.manual_seed(0)  # the VAE's posterior sample draws from the global generator
    with_depth = pseudo_ground_truth(plain, rgb, mask, "a red cube", cfg, generator=torch.Generator().manual_seed(0),
                                     depth=depth)
    torch.manual_seed(0)
    without = pseudo_ground_truth(plain, rgb, mask, "a red cube", cfg, generator=torch.Generator().manual_seed(0))
    assert torch.equal(with_depth["pseudo_gt"], without["pseudo_gt"])
