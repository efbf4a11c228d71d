"""StableDiffusionPrior and load_prior on tiny random SD folders built with the real diffusers/transformers classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill3d.priors.base import PriorError
from distill3d.priors.loading import load_prior
from distill3d.priors.base import to_epsilon
from distill3d.priors.stable_diffusion import StableDiffusionPrior
from tiny_models import TINY_MAX_LENGTH, TINY_RESOLUTION, TINY_TEXT_DIM, build_tiny_sd, refuse_network


@pytest.fixture(scope="module")
def no_network():
    """Any attempt to open a network connection fails the test (the hub must never be contacted)."""

    with refuse_network():
        yield


@pytest.fixture(scope="module")
def sd_eps(tmp_path_factory, no_network) -> StableDiffusionPrior:
    return load_prior(build_tiny_sd(tmp_path_factory.mktemp("sd_eps"), "epsilon"))


@pytest.fixture(scope="module")
def sd_v(tmp_path_factory, no_network) -> StableDiffusionPrior:
    return load_prior(build_tiny_sd(tmp_path_factory.mktemp("sd_v"), "v_prediction"))


def test_load_prior_builds_a_frozen_latent_prior(sd_eps: StableDiffusionPrior, sd_v: StableDiffusionPrior) -> None:
    assert isinstance(sd_eps, StableDiffusionPrior)
    assert sd_eps.space == "latent" and sd_eps.resolution == TINY_RESOLUTION
    assert sd_eps.num_train_timesteps == 1000 and sd_eps.alphas_cumprod.shape == (1000,)
    assert torch.allclose(sd_eps.alphas_cumprod, sd_eps.scheduler.alphas_cumprod.float())
    assert sd_eps.prediction_type == "epsilon" and sd_v.prediction_type == "v_prediction"
    # SD 1.5 ships a PNDM config; the prior reads it as DDPM with the same schedule
    assert type(sd_eps.scheduler).__name__ == "DDPMScheduler"
    assert sd_eps.dtype == torch.float32 and sd_eps.device == torch.device("cpu")
    for module in (sd_eps.unet, sd_eps.vae, sd_eps.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())


def test_encode_text_pads_to_max_length(sd_eps: StableDiffusionPrior) -> None:
    emb = sd_eps.encode_text(["a red cube", "a blue striped sphere with a face, side view"])
    assert emb.shape == (2, TINY_MAX_LENGTH, TINY_TEXT_DIM) and emb.dtype == torch.float32
    assert not torch.allclose(emb[0], emb[1])
    text = sd_eps.embed(["a red cube"])
    assert text.cond.shape == (1, TINY_MAX_LENGTH, TINY_TEXT_DIM) and text.uncond.shape == text.cond.shape
    assert torch.allclose(text.cond, emb[:1])  # deterministic, batch-independent
    long = sd_eps.encode_text(["a red cube " * 20])  # truncated, not an error
    assert long.shape == (1, TINY_MAX_LENGTH, TINY_TEXT_DIM)


def test_encode_images_is_differentiable_and_scaled(sd_eps: StableDiffusionPrior) -> None:
    images = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0), requires_grad=True)
    latents = sd_eps.encode_images(images)  # resized 24 -> 16, latents 8 x 8
    assert latents.shape == (2, 4, TINY_RESOLUTION // 2, TINY_RESOLUTION // 2)
    latents.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0 and torch.isfinite(images.grad).all()
    # posterior mean mode: exactly the VAE mean times the scaling factor, on [-1, 1] inputs
    sd_eps.latent_sample = False
    try:
        x = torch.rand(1, 3, 16, 16)
        mean = sd_eps.encode_images(x)
        with torch.no_grad():
            ref = sd_eps.vae.encode(x * 2 - 1).latent_dist.mean * sd_eps.vae.config.scaling_factor
        assert torch.allclose(mean, ref, atol=1e-6)
        assert torch.equal(sd_eps.encode_images(x), mean)
    finally:
        sd_eps.latent_sample = True
    with pytest.raises(PriorError, match=r"\(B, 3, H, W\)"):
        sd_eps.encode_images(torch.rand(3, 16, 16))


def test_decode_returns_images_in_unit_range(sd_eps: StableDiffusionPrior) -> None:
    with torch.no_grad():
        out = sd_eps.decode(torch.randn(2, 4, 8, 8))
    assert out.shape == (2, 3, TINY_RESOLUTION, TINY_RESOLUTION) and out.min() >= 0 and out.max() <= 1


def test_to_epsilon_inverts_the_schedulers_parameterisations(sd_v: StableDiffusionPrior) -> None:
    sched = sd_v.scheduler
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([5, 400, 990])
    x_t = sched.add_noise(x0, noise, t)
    a = sched.alphas_cumprod[t]
    assert torch.allclose(sd_v.add_noise(x0, noise, t), x_t, atol=1e-5)
    v = sched.get_velocity(x0, noise, t)
    assert torch.allclose(to_epsilon(v, x_t, a, "v_prediction"), noise, atol=1e-4)
    assert torch.allclose(to_epsilon(x0, x_t, a, "sample"), noise, atol=1e-3)
    assert torch.equal(to_epsilon(noise, x_t, a, "epsilon"), noise)
    with pytest.raises(PriorError, match="prediction_type"):
        to_epsilon(noise, x_t, a, "flow")


def test_predict_noise_converts_v_prediction_to_epsilon(sd_v: StableDiffusionPrior, sd_eps: StableDiffusionPrior) -> None:
    g = torch.Generator().manual_seed(2)
    x_t = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([100, 800])
    text = sd_v.encode_text(["a red cube", "a green cone"])
    with torch.no_grad():
        v = sd_v.unet(x_t, t, encoder_hidden_states=text).sample
        eps = sd_v.predict_noise(x_t, t, text)
        eps_model = sd_eps.predict_noise(x_t, t, text)
        raw = sd_eps.unet(x_t, t, encoder_hidden_states=text).sample
    a = sd_v.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert eps.shape == x_t.shape
    assert torch.allclose(eps, a.sqrt() * v + (1 - a).sqrt() * x_t, atol=1e-5)
    assert not torch.allclose(eps, v, atol=1e-3)
    assert torch.allclose(eps_model, raw, atol=1e-6)  # epsilon models pass through
    # scalar t broadcasts over the batch
    with torch.no_grad():
        assert torch.allclose(sd_v.predict_noise(x_t, torch.tensor(100), text)[0], eps[0], atol=1e-5)


def test_cfg_scale_one_is_the_conditional_prediction(sd_v: StableDiffusionPrior) -> None:
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([300, 600])
    text = sd_v.embed(["a red cube", "a purple torus"])
    with torch.no_grad():
        guided, cond, uncond = sd_v.predict_noise_cfg(x_t, t, text, guidance_scale=1.0)
        direct = sd_v.predict_noise(x_t, t, text.cond)
        guided7, _, _ = sd_v.predict_noise_cfg(x_t, t, text, guidance_scale=7.5)
    assert torch.allclose(guided, cond, atol=1e-5) and torch.allclose(cond, direct, atol=1e-5)
    assert not torch.allclose(cond, uncond, atol=1e-4)
    assert torch.allclose(guided7, uncond + 7.5 * (cond - uncond), atol=1e-4)


def test_latent_sds_steps_update_a_learnable_image(sd_eps: StableDiffusionPrior) -> None:
    """distill3d.guidance.sds on the SD prior: renders are resized to the prior's resolution, VAE-encoded, and the
    surrogate loss carries w(t) (eps_hat - eps) back to the image."""
    from distill3d.guidance.sds import SDSConfig, sds_loss

    torch.manual_seed(0)
    image = torch.nn.Parameter(torch.full((2, 3, 24, 24), 0.5))
    start = image.detach().clone()
    opt = torch.optim.Adam([image], lr=0.05)
    text = sd_eps.embed(["a red cube", "a red cube, side view"])
    cfg = SDSConfig(guidance_scale=7.5, t_min=0.02, t_max=0.98)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        opt.zero_grad()
        out = sds_loss(sd_eps, image, text, cfg, progress=step / 3, generator=g)
        loss = out["loss_sds"]
        assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
        assert out["t"].shape == (2,) and ((out["t"] >= 20) & (out["t"] <= 980)).all()
        # the surrogate is 1/2 |g|^2 / B: its value and the reported gradient norm agree
        assert float(loss.detach()) == pytest.approx(0.5 * out["grad_norm"] ** 2 / 2, rel=1e-4)
        loss.backward()
        assert image.grad is not None and image.grad.abs().sum() > 0 and torch.isfinite(image.grad).all()
        opt.step()
    assert torch.isfinite(image).all() and (image.detach() - start).abs().max() > 0.05


# ---------------------------------------------------------------------------------------------- load_prior errors
def test_missing_folder_names_path_and_expected_layouts(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "sd15"
    with pytest.raises(PriorError) as err:
        load_prior(missing)
    msg = str(err.value)
    assert str(missing) in msg and "\n" not in msg
    assert "unet/ vae/ text_encoder/ tokenizer/ scheduler/" in msg and "save_pretrained" in msg
    assert "dvc repro train_prior" in msg and "models/toy_prior" in msg


def test_junk_folder_lists_what_was_found(tmp_path: Path) -> None:
    (tmp_path / "weights.ckpt").write_bytes(b"\0" * 8)
    (tmp_path / "notes").mkdir()
    with pytest.raises(PriorError) as err:
        load_prior(tmp_path)
    msg = str(err.value)
    assert "weights.ckpt" in msg and "notes/" in msg and "prior.json" in msg and "unet/" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PriorError, match="empty folder"):
        load_prior(empty)
    with pytest.raises(PriorError, match="is a file"):
        load_prior(tmp_path / "weights.ckpt")


def test_incomplete_sd_folder_and_bad_manifest(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    (tmp_path / "vae").mkdir()
    with pytest.raises(PriorError, match=r"missing text_encoder/, tokenizer/, scheduler/"):
        load_prior(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "prior.json").write_text(json.dumps({"kind": "imagen"}))
    with pytest.raises(PriorError, match="'imagen'"):
        load_prior(other)
    (other / "prior.json").write_text("[1, 2]")
    with pytest.raises(PriorError, match="kind"):
        load_prior(other)
    sd_like = tmp_path / "broken_sd"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (sd_like / name).mkdir(parents=True)
    with pytest.raises(PriorError, match="cannot load Stable Diffusion"):
        load_prior(sd_like)


def test_fp16_on_cpu_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PriorError, match="float32"):
        StableDiffusionPrior(tmp_path, dtype=torch.float16)


def test_prior_json_of_kind_toy_loads_the_toy_prior(tmp_path: Path, no_network) -> None:
    from distill3d.priors.toy import ToyPrior, ToyPriorArchitecture

    arch = ToyPriorArchitecture(
        resolution=16, block_out_channels=(16, 32), cross_attention_levels=(False, True), text_width=16, text_layers=1
    )
    ToyPrior.build(arch).save(tmp_path / "toy_prior")
    prior = load_prior(tmp_path / "toy_prior")
    assert isinstance(prior, ToyPrior) and prior.space == "pixel" and prior.resolution == 16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 path needs CUDA")
def test_fp16_on_cuda_keeps_fp32_interfaces(tmp_path: Path) -> None:
    prior = load_prior(build_tiny_sd(tmp_path / "sd", "v_prediction"), device="cuda")
    assert prior.dtype == torch.float16 and prior.unet.dtype == torch.float16
    images = torch.rand(2, 3, 16, 16, device="cuda", requires_grad=True)
    latents = prior.encode_images(images)
    assert latents.dtype == torch.float32
    latents.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    text = prior.embed(["a red cube"] * 2)
    assert text.cond.dtype == torch.float32
    with torch.no_grad():
        eps, _, _ = prior.predict_noise_cfg(latents.detach(), torch.tensor([10, 900], device="cuda"), text, 7.5)
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()


def test_fp16_variant_only_folders_load(tmp_path: Path, sd_eps: StableDiffusionPrior) -> None:
    """Hub snapshots fetched with variant="fp16" hold only *.fp16.* weights; they load without extra arguments."""
    path = build_tiny_sd(tmp_path / "sd")
    for sub in ("unet", "vae"):
        weights = path / sub / "diffusion_pytorch_model.safetensors"
        weights.rename(weights.with_name("diffusion_pytorch_model.fp16.safetensors"))
    (path / "text_encoder" / "model.safetensors").rename(path / "text_encoder" / "model.fp16.safetensors")
    prior = load_prior(path)
    assert prior.resolution == TINY_RESOLUTION
    # the same seed built the same weights: they were read, not re-initialised
    for mine, ref in ((prior.unet, sd_eps.unet), (prior.vae, sd_eps.vae), (prior.text_encoder, sd_eps.text_encoder)):
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), ref.state_dict().values()))
