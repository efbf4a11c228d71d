"""VSD (ProlificDreamer): the particle gradient against a by-hand computation, the LoRA's training, its start as the
frozen prior, particles through the loop, exact resume, both prior kinds, and the prior left as it was."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from distill3d.cameras import spherical_cameras
from distill3d.fields.encoding import HashGridConfig
from distill3d.fields.nerf import FieldConfig, RadianceField
from distill3d.guidance.lora import camera_features
from distill3d.guidance.vsd import (
    VSDConfig, VSDGuidance, lora_loss, min_snr_weight, unet_output, vsd_t_range, vsd_timesteps,
)
from distill3d.guidance.sds import sds_weight
from distill3d.optimize.config import DistillConfig
from distill3d.optimize.loop import distill
from distill3d.optimize.scene import volume_scene
from distill3d.priors.base import PriorError, to_epsilon
from distill3d.priors.toy import ToyPrior, ToyPriorArchitecture
from test_guidance_sds import LinearPrior

torch.set_num_threads(1)


def _toy_prior() -> ToyPrior:
    """A tiny random pixel prior (v-prediction, cosine schedule) at 16 px, with attention at its lower level."""
    torch.manual_seed(0)
    arch = ToyPriorArchitecture(resolution=16, block_out_channels=(16, 32), cross_attention_levels=(False, True),
                                text_width=32, text_layers=1)
    return ToyPrior.build(arch).eval()


def _v_to_eps(v: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    a = a.view(-1, 1, 1, 1)
    return a.sqrt() * v + (1 - a).sqrt() * x_t  # v = sqrt(a) eps - sqrt(1 - a) x_0


def _perturb(guide: VSDGuidance, seed: int = 0) -> None:
    """Random non-zero LoRA B matrices and camera MLP, so eps_phi differs from the prior and depends on the camera."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in guide.lora.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def _merged_reference(base: UNet2DConditionModel, guide: VSDGuidance) -> UNet2DConditionModel:
    """eps_phi built independently of peft and of the hook: W + (alpha / r) B A merged by hand into a copy of the
    pretrained weights, the camera MLP as diffusers' own projection class embedding (added to the time embedding)."""
    state = {k: v.clone() for k, v in base.state_dict().items()}
    lora = guide.lora.state_dict()
    scale = (guide.cfg.lora_alpha or guide.cfg.lora_rank) / guide.cfg.lora_rank
    for key, a in lora["lora"].items():
        if key.endswith(".lora_A.weight"):
            module = key[: -len(".lora_A.weight")]
            state[module + ".weight"] += scale * lora["lora"][module + ".lora_B.weight"] @ a
    for k, v in lora["camera_mlp"].items():
        state["class_embedding." + k] = v
    config = {k: v for k, v in base.config.items() if not k.startswith("_")}  # "_use_default_values" would win
    ref = UNet2DConditionModel.from_config({**config, "class_embed_type": "projection",
                                            "projection_class_embeddings_input_dim": 16})
    ref.load_state_dict(state, strict=True)
    return ref.eval()


@pytest.mark.parametrize("weighting", ["dreamfusion", "fantasia3d"])
def test_vsd_gradient_is_w_times_pretrained_cfg_minus_lora(weighting: str) -> None:
    prior = _toy_prior()
    base = copy.deepcopy(prior.unet)  # the pretrained model, never touched by the LoRA
    cfg = VSDConfig(guidance_scale=7.5, weighting=weighting, lora_alpha=8.0, lora_steps=1, lora_lr=1e-2)
    with VSDGuidance(prior, cfg) as guide:
        _perturb(guide)
        ref = _merged_reference(base, guide)  # eps_phi as it is *before* this call's LoRA update
        torch.manual_seed(1)
        images = torch.rand(3, 3, 16, 16, requires_grad=True)
        text = prior.embed(["a red cube, front view", "a red cube, side view", "a red cube, back view"])
        cams = spherical_cameras([0.0, 90.0, 180.0], [10.0, 30.0, -5.0])
        out = guide(prior, images, text, progress=0.5, generator=torch.Generator().manual_seed(2), cameras=cams)
        out["loss_vsd"].backward()

    gen = torch.Generator().manual_seed(2)  # vsd_loss draws t, then the noise
    t = vsd_timesteps(cfg, 0.5, 3, 1000, gen)
    noise = torch.randn(3, 3, 16, 16, generator=gen)
    assert torch.equal(t, out["t"]) and t.max() <= 500  # annealed to 0.5 by progress 0.2
    a = prior.alphas_cumprod[t]
    x0 = images.detach() * 2 - 1
    x_t = a.sqrt().view(-1, 1, 1, 1) * x0 + (1 - a).sqrt().view(-1, 1, 1, 1) * noise
    with torch.no_grad():
        eps_c = _v_to_eps(base(x_t, t, encoder_hidden_states=text.cond).sample, x_t, a)
        eps_u = _v_to_eps(base(x_t, t, encoder_hidden_states=text.uncond.expand(3, -1, -1)).sample, x_t, a)
        eps_phi = _v_to_eps(ref(x_t, t, encoder_hidden_states=text.cond, class_labels=cams.c2w.reshape(3, 16)).sample,
                            x_t, a)
    eps_cfg = eps_u + 7.5 * (eps_c - eps_u)
    g = sds_weight(a, weighting).view(-1, 1, 1, 1) * (eps_cfg - eps_phi)
    assert (eps_phi - eps_c).abs().max() > 1e-2  # the LoRA and camera really change the prediction
    torch.testing.assert_close(images.grad, 2.0 * g / 3, rtol=1e-4, atol=1e-5)  # d x_0 / d image = 2
    assert out["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-4)
    assert set(out) == {"loss_vsd", "t", "w", "grad_norm", "lora_loss"}


def test_at_initialisation_lora_is_the_frozen_prior_and_vsd_is_the_classifier_score() -> None:
    """LoRA B = 0 and camera MLP output 0: eps_phi(x_t; y, t, c) = eps_pretrain(x_t; y, t) for any camera, so
    g = w(t) (eps_cfg - eps_cond) = w(t) (s - 1) (eps_cond - eps_uncond): no noise term, unlike SDS."""
    prior = _toy_prior()
    s = 7.5
    with VSDGuidance(prior, VSDConfig(guidance_scale=s, lora_steps=0)) as guide:
        x_t, t = torch.randn(2, 3, 16, 16), torch.tensor([30, 800])
        text = prior.embed(["a blue cone", "a blue cone"])
        for cams in (spherical_cameras([0.0, 120.0], [0.0, 45.0]), None):
            feats = camera_features(cams, 2, x_t.device)
            with torch.no_grad(), guide.lora.conditioned(feats):  # the LoRA branch as vsd_loss computes it
                eps_phi = to_epsilon(unet_output(prior, x_t, t, text.cond), x_t, prior.alphas_cumprod[t],
                                     "v_prediction")
            torch.testing.assert_close(eps_phi, prior.predict_noise(x_t, t, text.cond), rtol=0, atol=1e-6)

        images = torch.rand(2, 3, 16, 16, requires_grad=True)
        out = guide(prior, images, text, 0.0, generator=torch.Generator().manual_seed(0),
                    cameras=spherical_cameras([0.0, 120.0], [0.0, 45.0]))
        out["loss_vsd"].backward()
        gen = torch.Generator().manual_seed(0)
        t = vsd_timesteps(guide.cfg, 0.0, 2, 1000, gen)
        noise = torch.randn(2, 3, 16, 16, generator=gen)
        x_t = prior.add_noise(images.detach() * 2 - 1, noise, t)
        with torch.no_grad():
            _, eps_c, eps_u = prior.predict_noise_cfg(x_t, t, text, s)
        g = (1 - prior.alphas_cumprod[t]).view(-1, 1, 1, 1) * (s - 1) * (eps_c - eps_u)
        torch.testing.assert_close(images.grad, 2.0 * g / 2, rtol=1e-4, atol=1e-6)
        assert out["lora_loss"] != out["lora_loss"]  # nan: no LoRA step asked for


def _bar_images(n: int, size: int) -> torch.Tensor:
    """n fixed "renders" in model space [-1, 1]: flat random colours, each with a black bar at its own height."""
    torch.manual_seed(3)
    x0 = torch.rand(n, 3, 1, 1).expand(n, 3, size, size).clone() * 2 - 1
    bar = size // 4
    for i in range(n):
        x0[i, :, bar * i:bar * (i + 1), :] = -1.0
    return x0


def test_lora_loss_is_the_priors_own_training_loss() -> None:
    """At initialisation the LoRA's loss is the frozen prior's v-prediction MSE (how it was trained), by hand."""
    prior = _toy_prior()
    base = copy.deepcopy(prior.unet)
    x0 = _bar_images(4, 16)
    text = prior.embed(["a red cube"] * 4).cond
    cams = camera_features(spherical_cameras([0.0, 90.0, 180.0, 270.0], [15.0] * 4), 4, x0.device)
    with VSDGuidance(prior) as guide, torch.no_grad():
        loss = float(lora_loss(prior, guide.lora, x0, text, cams, guide.cfg, torch.Generator().manual_seed(9)))
        gamma5 = VSDConfig(lora_min_snr_gamma=5.0)
        weighted = float(lora_loss(prior, guide.lora, x0, text, cams, gamma5, torch.Generator().manual_seed(9)))
    gen = torch.Generator().manual_seed(9)  # lora_loss draws t, noise, then the camera-dropout mask
    t = torch.randint(0, 1000, (4,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        v_hat = base(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, encoder_hidden_states=text).sample
    per_image = ((v_hat - (a.sqrt() * noise - (1 - a).sqrt() * x0)) ** 2).mean(dim=(1, 2, 3))
    assert loss == pytest.approx(float(per_image.mean()), rel=1e-5)
    snr = a.flatten() / (1 - a.flatten())
    assert weighted == pytest.approx(float((per_image * snr.clamp_max(5.0) / (snr + 1)).mean()), rel=1e-5)


REAL_TOY_PRIOR = Path(__file__).resolve().parents[1] / "models" / "toy_prior"


@pytest.mark.skipif(not (REAL_TOY_PRIOR / "prior.json").exists(), reason="models/toy_prior not present")
def test_lora_loss_falls_on_fixed_renders() -> None:
    """The trained toy prior (a random tiny UNet is no denoiser, so no rank-4 LoRA can lower its loss): 20 LoRA
    steps on 2 fixed renders lower its loss on them, measured with the same t / noise / dropout before and after."""
    prior = ToyPrior.load(REAL_TOY_PRIOR)
    x0 = _bar_images(2, 32)
    text = prior.embed(["a red cube"] * 2).cond
    cams = camera_features(spherical_cameras([0.0, 90.0], [15.0] * 2), 2, x0.device)
    cfg = VSDConfig(lora_lr=1e-2)
    with VSDGuidance(prior, cfg) as guide:
        def held_out() -> float:  # 8 draws of (t, noise, dropout), the same every time
            with torch.no_grad():
                return float(lora_loss(prior, guide.lora, x0.repeat(4, 1, 1, 1), text.repeat(4, 1, 1),
                                       cams.repeat(4, 1), cfg, torch.Generator().manual_seed(9)))

        before = held_out()
        gen = torch.Generator().manual_seed(0)
        losses = [guide.train_lora(x0, text, cams, gen) for _ in range(20)]
        after = held_out()
    assert after < 0.75 * before, (before, after)
    assert guide.history["lora_loss"] == losses


def test_min_snr_weights_match_the_epsilon_form() -> None:
    """Min-SNR-gamma on the v target equals the epsilon MSE weighted by min(1, gamma / SNR) (||v - v'||^2 =
    ||eps - eps'||^2 / a), as the toy priors were trained."""
    a = torch.tensor([0.999, 0.9, 0.5, 0.01])
    snr = a / (1 - a)
    torch.testing.assert_close(min_snr_weight(a, 5.0, "v_prediction") / a, torch.clamp(5.0 / snr, max=1.0))
    torch.testing.assert_close(min_snr_weight(a, 5.0, "epsilon"), torch.clamp(5.0 / snr, max=1.0))


def test_timestep_range_anneals_part_way() -> None:
    cfg = VSDConfig()  # 0.98 -> 0.5 at progress 0.2 (ProlificDreamer: at 5k of 25k steps)
    assert vsd_t_range(cfg, 0.0) == pytest.approx((0.02, 0.98))
    assert vsd_t_range(cfg, 0.19) == pytest.approx((0.02, 0.98))
    assert vsd_t_range(cfg, 0.2) == pytest.approx((0.02, 0.5))
    assert vsd_t_range(cfg, 1.0) == pytest.approx((0.02, 0.5))
    linear = VSDConfig(anneal_start=0.2, anneal_end=0.6)
    assert vsd_t_range(linear, 0.4) == pytest.approx((0.02, 0.74))
    assert vsd_t_range(VSDConfig(t_max_final=None), 1.0) == pytest.approx((0.02, 0.98))
    with pytest.raises(ValueError):
        VSDConfig(anneal_start=0.5, anneal_end=0.4)


def test_prior_is_unchanged_between_calls_and_restored_by_close() -> None:
    prior = _toy_prior()
    before = {k: v.clone() for k, v in prior.unet.state_dict().items()}
    x_t, t = torch.randn(2, 3, 16, 16), torch.tensor([100, 600])
    text = prior.embed(["a green torus", ""])
    with torch.no_grad():
        ref = prior.predict_noise(x_t, t, text.cond)
    rng = torch.get_rng_state()
    guide = VSDGuidance(prior, VSDConfig(lora_lr=1e-2, lora_steps=2))
    assert torch.equal(torch.get_rng_state(), rng)  # its initialisation draws from cfg.init_seed only
    with pytest.raises(ValueError, match="already carries adapters"):
        VSDGuidance(prior)
    images, torus = torch.rand(2, 3, 16, 16), prior.embed(["a green torus"] * 2)
    for step in range(3):
        guide(prior, images, torus, step / 2, generator=torch.Generator().manual_seed(step),
              cameras=spherical_cameras([0.0, 60.0], [20.0, 20.0]))
    assert any(float(v.abs().max()) > 0 for k, v in guide.lora.state_dict()["lora"].items() if "lora_B" in k)
    with torch.no_grad():  # other callers of the prior still see the pretrained model
        torch.testing.assert_close(prior.predict_noise(x_t, t, text.cond), ref, rtol=0, atol=0)
        with guide.lora.conditioned(torch.zeros(2, 16)):
            assert (prior.predict_noise(x_t, t, text.cond) - ref).abs().max() > 1e-4  # the trained LoRA
    with pytest.raises(ValueError, match="another prior"):
        guide(_toy_prior(), images, text, 0.0)
    guide.close()
    guide.close()  # idempotent
    after = prior.unet.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert not any("lora" in type(m).__module__ for m in prior.unet.modules())
    with torch.no_grad():
        torch.testing.assert_close(prior.predict_noise(x_t, t, text.cond), ref, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="closed"):
        guide(prior, images, torus, 0.0)
    VSDGuidance(prior).close()  # a new one can attach after close


def test_adapter_trains_in_fp32_on_a_half_precision_unet() -> None:
    """An fp16 / bf16 UNet (Stable Diffusion on CUDA) gets fp32 LoRA and camera weights, and gradients reach them."""
    from distill3d.guidance.lora import CameraLoRA

    unet = _toy_prior().unet.to(torch.bfloat16)
    lora = CameraLoRA(unet)
    assert {p.dtype for p in lora.parameters()} == {torch.float32}
    x, t = torch.randn(2, 3, 16, 16, dtype=torch.bfloat16), torch.tensor([10, 500])
    with lora.conditioned(torch.randn(2, 16)):
        out = unet(x, t, encoder_hidden_states=torch.randn(2, 16, 32, dtype=torch.bfloat16)).sample
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in lora.parameters() if p.dim() == 2)
    lora.close()


def test_rejects_priors_without_a_unet() -> None:
    with pytest.raises(PriorError, match="UNet2DConditionModel"):
        VSDGuidance(LinearPrior())


# ---------------------------------------------------------------------------------------------- through the loop
def _field(seed: int) -> RadianceField:
    torch.manual_seed(seed)
    enc = HashGridConfig(n_levels=2, features_per_level=2, log2_hashmap_size=10, base_resolution=4, max_resolution=8)
    return RadianceField(FieldConfig(encoding=enc, hidden_width=8))


def _loop_cfg(**kw) -> DistillConfig:
    base = dict(steps=10, checkpoint_every=5, render_size=8, n_samples=16, albedo_only_fraction=0.3,
                lambda_opacity=0.1, occupancy_every=4, extra_lambdas={"vsd": 1.0}, lambda_sds=0.0)
    base.update(kw)
    return DistillConfig(**base)


def test_particles_share_the_guidance_and_stay_distinct() -> None:
    prior = _toy_prior()
    cfg = _loop_cfg(steps=6, views_per_step=2)
    fields = [_field(1), _field(2)]
    start = [{k: v.clone() for k, v in f.state_dict().items()} for f in fields]
    with VSDGuidance(prior, VSDConfig(lora_lr=1e-3)) as vsd:
        hist = distill([volume_scene(f, cfg) for f in fields], prior, "a red cube", cfg, seed=0, progress=False,
                       guidance=vsd)
    assert "loss_vsd" in hist["losses"] and "loss_sds" not in hist["losses"]
    assert all(len(ts) == 4 for ts in hist["t"])  # one guidance call on 2 particles x 2 views
    assert len(vsd.history["lora_loss"]) == 6 and vsd.calls == 6
    for f, s in zip(fields, start):
        assert any(not torch.equal(s[k], v) for k, v in f.state_dict().items())  # both particles moved
    a, b = fields[0].state_dict(), fields[1].state_dict()
    assert any((a[k] - b[k]).abs().max() > 1e-3 for k in a if a[k].is_floating_point())  # and stayed apart


class Stop(Exception):
    pass


def test_resume_with_lora_state_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    prior, cfg = _toy_prior(), _loop_cfg()
    vcfg = VSDConfig(lora_lr=1e-3, lora_steps=2)

    def die_at_7(step: int, info: dict) -> None:
        if step == 7:
            raise Stop

    work = tmp_path / "run"
    with pytest.raises(Stop), VSDGuidance(prior, vcfg) as vsd:
        distill([volume_scene(_field(0), cfg)], prior, "a red cube", cfg, seed=3, work_dir=work, progress=False,
                guidance=vsd, callback=die_at_7)
    ck = torch.load(work / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 5 and ck["guidance"]["calls"] == 5 and len(ck["guidance"]["history"]["lora_loss"]) == 5

    f2 = _field(0)
    with VSDGuidance(prior, vcfg) as resumed:  # a fresh process: new LoRA, state from the checkpoint
        hist = distill([volume_scene(f2, cfg)], prior, "a red cube", cfg, seed=3, work_dir=work, progress=False,
                       guidance=resumed)
        state2 = resumed.state_dict()
    assert hist["start_step"] == 5 and hist["steps_run"] == 5

    f3 = _field(0)
    with VSDGuidance(prior, vcfg) as straight:
        ref = distill([volume_scene(f3, cfg)], prior, "a red cube", cfg, seed=3, work_dir=tmp_path / "ref",
                      progress=False, guidance=straight)
        state3 = straight.state_dict()
    assert ref["loss_total"] == pytest.approx(hist["loss_total"], rel=1e-5)
    for (k, a), b in zip(f2.state_dict().items(), f3.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    for part in ("lora", "camera_mlp"):
        for k, v in state3[part].items():
            torch.testing.assert_close(state2[part][k], v, msg=k)
    assert any(float(v.abs().max()) > 0 for k, v in state3["lora"].items() if "lora_B" in k)  # it did train
    for i, st in state3["optimizer"]["state"].items():
        torch.testing.assert_close(state2["optimizer"]["state"][i]["exp_avg"], st["exp_avg"])
    assert state2["history"]["lora_loss"] == pytest.approx(state3["history"]["lora_loss"], rel=1e-5)
    assert state2["calls"] == state3["calls"] == 10


# ---------------------------------------------------------------------------------------------- latent prior
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_works_with_a_latent_stable_diffusion_prior(tmp_path: Path, prediction_type: str) -> None:
    from distill3d.priors.stable_diffusion import StableDiffusionPrior
    from tiny_models import build_tiny_sd

    prior = StableDiffusionPrior(build_tiny_sd(tmp_path / "sd", prediction_type=prediction_type), latent_sample=False)
    before = {k: v.clone() for k, v in prior.unet.state_dict().items()}
    x_t, t = torch.randn(2, 4, 8, 8), torch.tensor([50, 900])
    text = prior.embed(["a red cube", "a red cube"])
    with torch.no_grad():
        eps0 = prior.predict_noise(x_t, t, text.cond)
    with VSDGuidance(prior, VSDConfig(lora_lr=1e-2, lora_steps=3)) as vsd:
        with torch.no_grad(), vsd.lora.conditioned(torch.randn(2, 16)):  # at init: the frozen prior, any camera
            eps_phi = to_epsilon(unet_output(prior, x_t, t, text.cond), x_t, prior.alphas_cumprod[t], prediction_type)
        torch.testing.assert_close(eps_phi, eps0, rtol=0, atol=1e-5)
        images = torch.rand(2, 3, 16, 16, requires_grad=True)
        cams = spherical_cameras([0.0, 180.0], [0.0, 0.0])
        losses = []
        for step in range(4):
            out = vsd(prior, images, text, step / 3, generator=torch.Generator().manual_seed(step), cameras=cams)
            losses.append(out["lora_loss"])
        out["loss_vsd"].backward()
        assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
        assert all(l == l and l > 0 for l in losses)
        with torch.no_grad(), vsd.lora.conditioned(camera_features(cams, 2, x_t.device)):
            assert (prior.predict_noise(x_t, t, text.cond) - eps0).abs().max() > 1e-5  # trained
    after = prior.unet.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
