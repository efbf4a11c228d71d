"""SDS maths against an analytic prior whose noise prediction is a known linear function."""

from __future__ import annotations

import pytest
import torch

from distill3d.cameras import spherical_cameras
from distill3d.guidance.prompts import ViewPrompts
from distill3d.guidance.sds import SDSConfig, resize_to_prior, sample_timesteps, sds_loss, sds_weight, t_range
from distill3d.priors.base import Prior, PriorError, TextEmbeddings


class LinearPrior(Prior):
    """eps_hat(x_t, t, y) = A * x_t + B * y[:, 0, 0] (per image): analytic, for unit tests of the SDS maths.

    Text embedding of a prompt: (1, 2, 3) filled with len(prompt) / 10 (the empty prompt embeds to 0).
    Prompts containing "zzz" are unreadable. Records the last x_t and t it saw.
    """

    space = "pixel"

    def __init__(self, resolution: int = 8, A: float = 0.5, B: float = 2.0):
        self.resolution = resolution
        self.num_train_timesteps = 1000
        self.alphas_cumprod = torch.cos(torch.linspace(0, 1, 1000) * torch.pi / 2).clamp_min(1e-4) ** 2
        self.device = torch.device("cpu")
        self.A, self.B = A, B
        self.calls = 0

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        for p in prompts:
            if self.prompt_error(p):
                raise PriorError(self.prompt_error(p))
        return torch.stack([torch.full((2, 3), len(p) / 10.0) for p in prompts])

    def prompt_error(self, prompt: str) -> str | None:
        return "unknown word 'zzz': use words from the toy vocabulary" if "zzz" in prompt else None

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2.0 - 1.0

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return (x0 + 1.0) / 2.0

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, cond=None) -> torch.Tensor:
        self.calls += 1
        self.last_x_t, self.last_t = x_t.clone(), t.clone()
        return self.A * x_t + self.B * text[:, 0, 0].view(-1, 1, 1, 1)


def _text(prior: LinearPrior, prompts: list[str]) -> TextEmbeddings:
    return TextEmbeddings(cond=prior.encode_text(prompts), uncond=prior.encode_text([""]))


@pytest.mark.parametrize("weighting", ["dreamfusion", "uniform", "fantasia3d"])
def test_sds_gradient_is_w_times_eps_difference(weighting: str) -> None:
    prior = LinearPrior()
    torch.manual_seed(0)
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    text = _text(prior, ["a red cube", "a cube"])
    s = 7.5
    cfg = SDSConfig(guidance_scale=s, weighting=weighting)
    out = sds_loss(prior, images, text, cfg, progress=0.3, generator=torch.Generator().manual_seed(1))
    out["loss_sds"].backward()

    t = prior.last_t[:2]
    assert torch.equal(t, out["t"])
    x_t = prior.last_x_t[:2]
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    x0 = images.detach() * 2 - 1
    eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()  # the noise sds_loss drew
    # CFG by hand (DreamFusion eq. 1): eps_u + s (eps_c - eps_u) with the linear model.
    eps_c = prior.A * x_t + prior.B * text.cond[:, 0, 0].view(-1, 1, 1, 1)
    eps_u = prior.A * x_t + prior.B * text.uncond[0, 0, 0]
    eps_hat = eps_u + s * (eps_c - eps_u)
    w = sds_weight(prior.alphas_cumprod[t], weighting).view(-1, 1, 1, 1)
    expected_dx0 = w * (eps_hat - eps) / 2  # averaged over the batch of 2
    torch.testing.assert_close(images.grad, 2.0 * expected_dx0, rtol=1e-4, atol=1e-5)  # d x0 / d image = 2
    assert out["grad_norm"] == pytest.approx(float((w * (eps_hat - eps)).norm()), rel=1e-4)
    assert prior.calls == 1  # one batched call of size 2B for CFG


def test_cfg_formula_in_prior_base() -> None:
    prior = LinearPrior()
    x = torch.randn(3, 3, 8, 8)
    t = torch.tensor([10, 500, 900])
    text = _text(prior, ["ab", "abcd", "abcdef"])
    guided, cond, uncond = prior.predict_noise_cfg(x, t, text, guidance_scale=10.0)
    torch.testing.assert_close(cond - uncond, prior.B * text.cond[:, 0, 0].view(-1, 1, 1, 1).expand_as(x))
    torch.testing.assert_close(guided, uncond + 10.0 * (cond - uncond))


def test_weights_match_definitions() -> None:
    a = torch.tensor([0.9, 0.5, 0.1])
    torch.testing.assert_close(sds_weight(a, "dreamfusion"), 1 - a)
    torch.testing.assert_close(sds_weight(a, "uniform"), torch.ones(3))
    torch.testing.assert_close(sds_weight(a, "fantasia3d"), a.sqrt() * (1 - a))
    with pytest.raises(ValueError):
        sds_weight(a, "nope")


def test_timestep_annealing_range() -> None:
    cfg = SDSConfig(t_min=0.02, t_max=0.98, t_anneal=0.5)
    assert t_range(cfg, 0.0) == pytest.approx((0.02, 0.98))
    assert t_range(cfg, 0.5) == pytest.approx((0.02, 0.74))
    assert t_range(cfg, 1.0) == pytest.approx((0.02, 0.5))
    g = torch.Generator().manual_seed(0)
    for progress, hi in ((0.0, 980), (1.0, 500)):
        t = sample_timesteps(cfg, progress, 4000, 1000, g)
        assert t.min() >= 20 and t.max() <= hi
        assert t.min() <= 25 and t.max() >= hi - 5  # covers the range
    assert t_range(SDSConfig(t_min=0.3, t_max=0.98, t_anneal=0.1), 1.0) == pytest.approx((0.3, 0.3))
    assert t_range(SDSConfig(), 0.9) == pytest.approx((0.02, 0.98))  # no annealing by default


def test_grad_clip_and_nan_guard() -> None:
    class NanPrior(LinearPrior):
        def predict_noise(self, x_t, t, text, cond=None):
            out = super().predict_noise(x_t, t, text, cond)
            out[..., 0, 0] = float("nan")
            return out * 1e3

    prior = NanPrior()
    images = torch.rand(1, 3, 8, 8, requires_grad=True)
    out = sds_loss(prior, images, _text(prior, ["a cube"]), SDSConfig(grad_clip=0.5), 0.0)
    out["loss_sds"].backward()
    assert torch.isfinite(images.grad).all()
    assert images.grad.abs().max() <= 2 * 0.5 + 1e-6
    assert (images.grad[..., 0, 0] == 0).all()


def test_resize_to_prior_resolution() -> None:
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = resize_to_prior(x, 8)
    assert y.shape == (2, 3, 8, 8)
    torch.testing.assert_close(y.mean(), x.mean(), atol=1e-2, rtol=0)  # antialiased: averages
    y.sum().backward()
    assert x.grad.abs().sum() > 0
    assert resize_to_prior(x, 32) is x


def test_view_prompts_pick_rows_per_camera() -> None:
    prior = LinearPrior()
    vp = ViewPrompts(prior, "a red cube")
    cams = spherical_cameras([0.0, 90.0, 180.0, 30.0], [0.0, 0.0, 0.0, 80.0])
    assert vp.prompts_for(cams) == ["a red cube, front view", "a red cube, side view", "a red cube, back view",
                                    "a red cube, overhead view"]
    text = vp.for_cameras(cams)
    lens = torch.tensor([len(p) / 10 for p in vp.prompts_for(cams)])
    torch.testing.assert_close(text.cond[:, 0, 0], lens)
    assert text.uncond.shape == (1, 2, 3) and float(text.uncond.abs().sum()) == 0.0
    plain = ViewPrompts(prior, "a red cube", view_dependent=False).for_cameras(cams)
    torch.testing.assert_close(plain.cond[:, 0, 0], torch.full((4,), len("a red cube") / 10))


def test_view_prompts_raise_prior_error() -> None:
    with pytest.raises(PriorError, match="zzz"):
        ViewPrompts(LinearPrior(), "a zzz cube")


class WhiteningPrior(LinearPrior):
    """A prior with its own textureless wording (as the toy prior): "red" -> "white"."""

    def textureless_prompt(self, prompt: str) -> str:
        return prompt.replace("red", "white")


def test_textureless_renders_use_the_priors_textureless_prompt() -> None:
    cams = spherical_cameras([0.0, 180.0], [0.0, 0.0])
    general = ViewPrompts(LinearPrior(), "a red cube")  # a general prior keeps the prompt (DreamFusion)
    assert general.prompts_for(cams, textureless=True) == general.prompts_for(cams)
    vp = ViewPrompts(WhiteningPrior(), "a red cube")
    assert vp.prompts_for(cams, textureless=True) == ["a white cube, front view", "a white cube, back view"]
    shaded, plain = vp.for_cameras(cams), vp.for_cameras(cams, textureless=True)
    lens = torch.tensor([len(p) / 10 for p in vp.prompts_for(cams, textureless=True)])
    torch.testing.assert_close(plain.cond[:, 0, 0], lens)
    assert not torch.equal(plain.cond, shaded.cond)
