"""Multi-view SDS (MVDream): with an analytic prior the gradient on x_0 equals the formula, t is one per group and
annealed, the cameras reach the prior, bad batches are refused; and it runs on a tiny multi-view toy prior."""

from __future__ import annotations

import pytest
import torch

from distill3d.cameras import sample_multiview_cameras
from distill3d.guidance.multiview_sds import (
    MultiViewSDSConfig, MultiViewSDSGuidance, multiview_sds_loss, multiview_t_range,
)
from distill3d.priors.base import Conditioning, Prior, PriorError, TextEmbeddings

T = 1000


class AnalyticMultiViewPrior(Prior):
    """Pixel prior whose encoder is the identity and whose noise prediction is known in closed form:
    eps(x_t; y, c) = k(y) x_t + 0.05 cos(azimuth), k = 0.3 + 0.2 * mean(text), so cond (text of ones) gives k = 0.5
    and uncond (zeros) k = 0.3. It records every call."""

    space = "pixel"
    resolution = 8
    num_train_timesteps = T
    device = torch.device("cpu")
    camera_conditioned = True
    views_per_sample = 4

    def __init__(self):
        self.alphas_cumprod = torch.linspace(0.9999, 0.005, T)
        self.calls: list[dict] = []

    def encode_text(self, prompts):
        return torch.ones(len(prompts), 3, 2)

    def encode_images(self, images):
        return images

    def decode(self, x0):
        return x0

    def predict_noise(self, x_t, t, text, cond: Conditioning | None = None):
        self.calls.append({"x_t": x_t.clone(), "t": t.clone(), "text": text.clone(), "cameras": cond.cameras})
        k = 0.3 + 0.2 * text.mean(dim=(1, 2))
        return k.view(-1, 1, 1, 1) * x_t + 0.05 * torch.cos(torch.deg2rad(cond.cameras.azimuth)).view(-1, 1, 1, 1)


def _run(cfg: MultiViewSDSConfig, progress=0.5, groups=2, seed=0):
    prior = AnalyticMultiViewPrior()
    g = torch.Generator().manual_seed(seed)
    cams = sample_multiview_cameras(groups, generator=g)
    images = torch.rand(4 * groups, 3, 8, 8, generator=g).requires_grad_(True)
    text = TextEmbeddings(cond=torch.ones(4 * groups, 3, 2), uncond=torch.zeros(1, 3, 2))
    out = multiview_sds_loss(prior, images, text, cfg, progress, generator=g, cameras=cams)
    out["loss_sds"].backward()
    call = prior.calls[-1]
    n = 4 * groups
    x_t, t = call["x_t"][:n], call["t"][:n]
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    cos = 0.05 * torch.cos(torch.deg2rad(cams.azimuth)).view(-1, 1, 1, 1)
    eps_c, eps_u = 0.5 * x_t + cos, 0.3 * x_t + cos
    eps_w = eps_u + cfg.guidance_scale * (eps_c - eps_u)
    eps = (x_t - a.sqrt() * images.detach()) / (1 - a).sqrt()  # the noise that was drawn
    return images, out, call, cams, dict(a=a, x_t=x_t, eps_c=eps_c, eps_w=eps_w, eps=eps, n=n)


def test_x0_reconstruction_gradient_with_cfg_rescale_is_the_formula() -> None:
    cfg = MultiViewSDSConfig(guidance_scale=7.0, rescale=0.5)
    images, out, _, _, v = _run(cfg)
    a, x_t = v["a"], v["x_t"]
    x0_w = (x_t - (1 - a).sqrt() * v["eps_w"]) / a.sqrt()
    x0_c = (x_t - (1 - a).sqrt() * v["eps_c"]) / a.sqrt()
    expected = torch.empty_like(x0_w)
    for grp in range(2):  # the rescale, one group at a time
        s = slice(4 * grp, 4 * grp + 4)
        factor = (x0_c[s].std() + 1e-8) / (x0_w[s].std() + 1e-8)
        expected[s] = 0.5 * factor * x0_w[s] + 0.5 * x0_w[s]
    grad = (images.detach() - expected) / v["n"]
    assert torch.allclose(images.grad, grad, atol=1e-5, rtol=1e-4)
    assert out["grad_norm"] == pytest.approx(float((images.detach() - expected).norm()), rel=1e-4)


def test_x0_reconstruction_without_rescale_is_sds_weighted_by_inverse_root_snr() -> None:
    cfg = MultiViewSDSConfig(guidance_scale=5.0, rescale=0.0)
    images, out, _, _, v = _run(cfg)
    w = ((1 - v["a"]) / v["a"]).sqrt()
    assert torch.allclose(images.grad, w * (v["eps_w"] - v["eps"]) / v["n"], atol=1e-4, rtol=1e-3)
    assert torch.allclose(out["w"], w.flatten())


def test_sds_form_gradient_is_the_formula() -> None:
    cfg = MultiViewSDSConfig(guidance_scale=10.0, loss="sds", weighting="dreamfusion")
    images, _, _, _, v = _run(cfg)
    assert torch.allclose(images.grad, (1 - v["a"]) * (v["eps_w"] - v["eps"]) / v["n"], atol=1e-5, rtol=1e-4)


def test_one_t_per_group_annealed_from_high_to_low() -> None:
    cfg = MultiViewSDSConfig()
    assert multiview_t_range(cfg, 0.0) == pytest.approx((0.98, 0.98))
    assert multiview_t_range(cfg, 0.4) == pytest.approx((0.50, 0.74))
    assert multiview_t_range(cfg, 0.8) == pytest.approx((0.02, 0.50)) == multiview_t_range(cfg, 1.0)
    _, out0, _, _, _ = _run(cfg, progress=0.0, groups=8)
    assert (out0["t"] == 980).all()
    _, out1, _, _, _ = _run(cfg, progress=1.0, groups=8)
    t = out1["t"].view(8, 4)
    assert (t == t[:, :1]).all() and len(set(t[:, 0].tolist())) > 1
    assert t.min() >= 20 and t.max() <= 500


def test_the_prior_sees_the_cameras_and_both_cfg_halves() -> None:
    _, _, call, cams, v = _run(MultiViewSDSConfig())
    assert torch.equal(call["cameras"].azimuth, torch.cat([cams.azimuth, cams.azimuth]))
    assert torch.equal(call["x_t"][:8], call["x_t"][8:]) and torch.equal(call["t"][:8], call["t"][8:])
    assert call["text"][:8].eq(1).all() and call["text"][8:].eq(0).all()


def test_refuses_missing_cameras_and_partial_groups() -> None:
    prior = AnalyticMultiViewPrior()
    text = TextEmbeddings(cond=torch.ones(1, 3, 2), uncond=torch.zeros(1, 3, 2))
    guide = MultiViewSDSGuidance()
    with pytest.raises(PriorError, match="cameras"):
        guide(prior, torch.rand(4, 3, 8, 8), text, 0.5)
    cams = sample_multiview_cameras(2)
    with pytest.raises(PriorError, match="groups of 4"):
        guide(prior, torch.rand(6, 3, 8, 8), text, 0.5, cameras=cams[list(range(6))])
    with pytest.raises(ValueError):
        MultiViewSDSConfig(t_end=(0.6, 0.5))


def test_runs_on_a_tiny_multiview_toy_prior() -> None:
    from distill3d.priors.multiview import MultiViewArchitecture, MultiViewToyPrior

    torch.manual_seed(0)
    prior = MultiViewToyPrior.build(MultiViewArchitecture(
        resolution=16, block_out_channels=(16, 32), cross_attention_levels=(False, True), text_width=16,
        text_layers=1)).eval()
    g = torch.Generator().manual_seed(0)
    cams = sample_multiview_cameras(1, generator=g)
    images = torch.rand(4, 3, 24, 24, generator=g).requires_grad_(True)  # resized to the prior's 16 px
    out = MultiViewSDSGuidance(MultiViewSDSConfig(guidance_scale=5.0))(
        prior, images, prior.embed(["a red cube"]), 0.3, generator=g, cameras=cams)
    out["loss_sds"].backward()
    assert images.grad.shape == images.shape and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert set(out) == {"loss_sds", "t", "grad_norm", "w"} and out["t"].unique().numel() == 1


def test_guidance_samples_whole_camera_groups_for_the_loop() -> None:
    prior = AnalyticMultiViewPrior()
    cams = MultiViewSDSGuidance.sample_cameras(prior, 8, generator=torch.Generator().manual_seed(0))
    az = cams.azimuth.view(2, 4)
    assert torch.allclose((az - az[:, :1]) % 360.0, torch.tensor([0.0, 90.0, 180.0, 270.0]).expand(2, 4), atol=1e-3)
    assert torch.equal(cams.elevation.view(2, 4), cams.elevation.view(2, 4)[:, :1].expand(2, 4))
    with pytest.raises(PriorError, match="whole groups of 4"):
        MultiViewSDSGuidance.sample_cameras(prior, 6)
