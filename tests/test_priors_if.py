"""IFPrior (DeepFloyd IF stage I, a pixel prior) through load_prior, on a tiny random IF folder built with the real
diffusers/transformers classes (tests/tiny_models.py ``build_tiny_if``): loading, T5 embeddings cached per prompt,
epsilon without the learned variance, classifier-free guidance, one SDS step and a short nerf_sds run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from distill3d.priors.base import PriorError
from distill3d.priors.deepfloyd_if import IF_MAX_LENGTH, IFPrior
from distill3d.priors.loading import load_prior
from tiny_models import TINY_RESOLUTION, TINY_TEXT_DIM, build_tiny_if, build_tiny_sd, refuse_network

R = TINY_RESOLUTION


@pytest.fixture(scope="module")
def if_folder(tmp_path_factory) -> Path:
    return build_tiny_if(tmp_path_factory.mktemp("tiny_if"))


@pytest.fixture(scope="module")
def prior(if_folder: Path) -> IFPrior:
    with refuse_network():
        return load_prior(if_folder)


def _noisy(seed: int = 0, b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, R, R, generator=torch.Generator().manual_seed(seed))


def test_load_prior_builds_a_frozen_pixel_prior(prior: IFPrior, if_folder: Path) -> None:
    assert isinstance(prior, IFPrior) and prior.space == "pixel" and prior.resolution == R
    assert prior.num_train_timesteps == 1000 and prior.alphas_cumprod.shape == (1000,)
    assert torch.allclose(prior.alphas_cumprod, prior.scheduler.alphas_cumprod.float())
    assert prior.scheduler.config.variance_type == "learned_range" and prior.prediction_type == "epsilon"
    assert prior.dtype == torch.float32 and prior.device == torch.device("cpu") and prior.channels == 3
    assert not prior.depth_conditioned and not prior.camera_conditioned and prior.views_per_sample == 1
    for module in (prior.unet, prior.text_encoder):
        assert not module.training and not any(p.requires_grad for p in module.parameters())
    # real priors read any text; the textureless prompt is the prompt itself
    assert prior.prompt_error("a DSLR photo of a ceramic teapot") is None
    assert prior.textureless_prompt("a red cube") == "a red cube"
    index = json.loads((if_folder / "model_index.json").read_text())
    assert index["_class_name"] == "IFPipeline" and index["safety_checker"] == [None, None]


def test_hub_style_index_with_unloaded_parts_still_loads(prior: IFPrior, if_folder: Path, tmp_path: Path) -> None:
    """The hub's model_index.json names a safety checker, feature extractor and watermarker: they are not loaded
    (here their folders are absent altogether)."""
    copy = Path(shutil.copytree(if_folder, tmp_path / "hub_like"))
    index = json.loads((copy / "model_index.json").read_text())
    index.update(safety_checker=["deepfloyd_if", "IFSafetyChecker"], feature_extractor=["transformers",
                 "CLIPImageProcessor"], watermarker=["deepfloyd_if", "IFWatermarker"], requires_safety_checker=True)
    (copy / "model_index.json").write_text(json.dumps(index))
    with refuse_network():
        loaded = load_prior(copy)
    assert isinstance(loaded, IFPrior)
    assert all(torch.equal(a, b) for a, b in zip(loaded.unet.state_dict().values(), prior.unet.state_dict().values()))


def test_encode_text_matches_the_if_pipeline(prior: IFPrior) -> None:
    from diffusers import IFPipeline

    prompts = ["a red cube", "A Blue striped sphere, side view ", ""]
    emb = prior.encode_text(prompts)
    assert emb.shape == (3, IF_MAX_LENGTH, TINY_TEXT_DIM) and emb.dtype == torch.float32
    pipe = IFPipeline(tokenizer=prior.tokenizer, text_encoder=prior.text_encoder, unet=prior.unet,
                      scheduler=prior.scheduler, safety_checker=None, feature_extractor=None, watermarker=None,
                      requires_safety_checker=False)
    ref, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device=prior.device)
    assert torch.allclose(emb, ref.float(), atol=1e-6)
    text = prior.embed(["a red cube"])
    assert torch.equal(text.cond, emb[:1]) and torch.equal(text.uncond, emb[2:])
    assert prior.encode_text(["a red cube " * 40]).shape == (1, IF_MAX_LENGTH, TINY_TEXT_DIM)  # truncated


def test_text_embeddings_are_computed_once_per_prompt(prior: IFPrior, monkeypatch) -> None:
    from distill3d.guidance.prompts import ViewPrompts

    encoded: list[int] = []  # batch size of each T5 call
    forward = prior.text_encoder.forward

    def counting(input_ids, *args, **kwargs):
        encoded.append(int(input_ids.shape[0]))
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(prior.text_encoder, "forward", counting)
    monkeypatch.setattr(prior, "text_cache", {})
    first = prior.embed(["a green cone"])
    assert encoded == [1, 1]  # the prompt, then the empty prompt
    again = prior.embed(["a green cone"])
    assert encoded == [1, 1] and torch.equal(first.cond, again.cond) and torch.equal(first.uncond, again.uncond)
    mixed = prior.encode_text(["a green cone", "a purple torus", "a purple torus"])
    assert encoded == [1, 1, 1] and torch.equal(mixed[1], mixed[2]) and torch.equal(mixed[0], first.cond[0])
    ViewPrompts(prior, "a green cone")  # 4 view phrases, textureless = the same texts, empty prompt cached
    assert encoded == [1, 1, 1, 4]
    ViewPrompts(prior, "a green cone")  # a second stage / run in the same process: nothing new
    assert encoded == [1, 1, 1, 4] and len(prior.text_cache) == 7
    fresh = prior._t5(["a purple torus"])[0]
    assert torch.allclose(mixed[1], fresh)  # the cache holds what T5 gives


def test_images_map_to_minus_one_one_and_back(prior: IFPrior) -> None:
    images = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(1), requires_grad=True)
    x0 = prior.encode_images(images)
    assert x0.shape == (2, 3, R, R) and x0.dtype == torch.float32 and x0.min() >= -1 and x0.max() <= 1
    x0.square().sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    native = torch.rand(1, 3, R, R)
    assert torch.allclose(prior.encode_images(native), native * 2 - 1)
    assert torch.allclose(prior.decode(prior.encode_images(native)), native, atol=1e-6)
    assert prior.decode(torch.full((1, 3, R, R), 3.0)).max() == 1.0
    with pytest.raises(PriorError, match="B, 3, H, W"):
        prior.encode_images(torch.rand(3, R, R))


def test_predict_noise_is_the_epsilon_half_of_the_unet_output(prior: IFPrior) -> None:
    x_t, t = _noisy(), torch.tensor([10, 900])
    text = prior.encode_text(["a red cube", "a blue sphere"])
    with torch.no_grad():
        eps = prior.predict_noise(x_t, t, text)
        raw = prior.unet(x_t, t, encoder_hidden_states=text).sample
        one_t = prior.predict_noise(x_t, torch.tensor(10), text)
        first = prior.predict_noise(x_t[:1], t[:1], text[:1])
    assert raw.shape == (2, 6, R, R) and eps.shape == (2, 3, R, R) and eps.dtype == torch.float32
    assert torch.allclose(eps, raw[:, :3], atol=1e-6)  # epsilon: the first 3 channels
    assert not torch.allclose(eps, raw[:, 3:], atol=1e-3)  # the learned variance is dropped
    assert torch.allclose(first, eps[:1], atol=1e-5)
    assert one_t.shape == eps.shape and torch.allclose(one_t[0], eps[0], atol=1e-5)  # one t for the batch


def test_cfg_is_uncond_plus_w_times_the_difference(prior: IFPrior) -> None:
    x_t, t, w = _noisy(2), torch.tensor([50, 700]), 7.5
    text = prior.embed(["a yellow cylinder", "a white torus"])
    with torch.no_grad():
        guided, cond, uncond = prior.predict_noise_cfg(x_t, t, text, w)
        eps_c = prior.predict_noise(x_t, t, text.cond)
        eps_u = prior.predict_noise(x_t, t, text.uncond.expand(2, -1, -1))
    assert guided.shape == (2, 3, R, R)
    assert torch.allclose(cond, eps_c, atol=1e-5) and torch.allclose(uncond, eps_u, atol=1e-5)
    assert torch.allclose(guided, eps_u + w * (eps_c - eps_u), atol=1e-4)
    assert not torch.allclose(eps_c, eps_u, atol=1e-4)  # the text does condition the tiny UNet


def test_one_sds_step_gives_a_finite_gradient_of_the_image_shape(prior: IFPrior) -> None:
    from distill3d.guidance.sds import SDSConfig, sds_loss

    image = torch.rand(2, 3, 2 * R, 2 * R, generator=torch.Generator().manual_seed(3), requires_grad=True)
    out = sds_loss(prior, image, prior.embed(["a red cube"] * 2), SDSConfig(guidance_scale=20.0), progress=0.5,
                   generator=torch.Generator().manual_seed(4))
    assert out["loss_sds"].ndim == 0 and torch.isfinite(out["loss_sds"]) and out["loss_sds"] > 0
    out["loss_sds"].backward()
    assert image.grad is not None and image.grad.shape == image.shape
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- bad folders
def _one_line_error(path: Path, *fragments: str, **kwargs) -> str:
    with pytest.raises(PriorError) as err:
        load_prior(path, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg and all(f in msg for f in fragments), msg
    return msg


def test_incomplete_if_folder_names_the_missing_parts(if_folder: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(if_folder, tmp_path / "if", ignore=shutil.ignore_patterns("unet", "scheduler")))
    _one_line_error(broken, str(broken), "missing unet/, scheduler/", "IF-I-XL-v1.0", "text_encoder/ tokenizer/")
    (broken / "unet").mkdir()
    (broken / "scheduler").mkdir()
    _one_line_error(broken, "cannot load DeepFloyd IF from")


def test_other_if_stages_and_other_folders_are_refused(if_folder: Path, tmp_path: Path) -> None:
    sr = Path(shutil.copytree(if_folder, tmp_path / "if_ii"))
    index = json.loads((sr / "model_index.json").read_text())
    (sr / "model_index.json").write_text(json.dumps({**index, "_class_name": "IFSuperResolutionPipeline"}))
    _one_line_error(sr, "IFSuperResolutionPipeline", "not IF stage I", "IF-I-XL-v1.0")
    sd = build_tiny_sd(tmp_path / "sd")  # an SD folder is no IF folder, even when asked for directly
    with pytest.raises(PriorError, match="StableDiffusionPipeline.*not IF stage I"):
        IFPrior(sd)
    with pytest.raises(PriorError, match="float32"):
        IFPrior(if_folder, dtype=torch.float16)


def test_the_hubs_sentencepiece_tokenizer_loads_or_says_what_to_install(if_folder: Path, tmp_path: Path) -> None:
    """The hub's IF folder has tokenizer/spiece.model and no tokenizer.json: with sentencepiece + protobuf (project
    dependencies) it loads and tokenizes; without them, one line says what to install."""
    from transformers.utils import is_protobuf_available, is_sentencepiece_available

    hub = Path(shutil.copytree(if_folder, tmp_path / "hub_tok"))
    (hub / "tokenizer" / "tokenizer.json").unlink()
    if not (is_sentencepiece_available() and is_protobuf_available()):
        (hub / "tokenizer" / "spiece.model").write_bytes(b"\0" * 16)
        _one_line_error(hub, "spiece.model", "pip install")
        return
    import sentencepiece as spm

    vocab = json.loads((if_folder / "text_encoder" / "config.json").read_text())["vocab_size"]
    text = "a dslr photo of a ceramic teapot on a red table"
    spm.SentencePieceTrainer.train(sentence_iterator=iter([text] * 20), model_prefix=str(tmp_path / "sp"),
                                   vocab_size=vocab, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False)
    shutil.copy(tmp_path / "sp.model", hub / "tokenizer" / "spiece.model")
    prior = IFPrior(hub)
    ids = prior.tokenizer(["a ceramic teapot"], return_tensors="pt")["input_ids"][0]
    assert ids[-1] == 1 and (ids < vocab).all() and len(ids) > 2  # T5 ends with </s> = 1; the ids fit the encoder
    assert torch.isfinite(prior.encode_text(["a ceramic teapot"])).all()


# ---------------------------------------------------------------------------------------------- a stage through it
def test_nerf_sds_runs_with_the_if_prior(if_folder: Path, tmp_path: Path, monkeypatch) -> None:
    """`python -m stages nerf_sds --in prior=<IF folder>` at a few steps (in-process: the same `execute`), with a
    prompt outside the toy world: an IF prior reads any text."""
    from stages import nerf_sds
    from stages.core.execute import execute
    from stages.core.params import load_params

    monkeypatch.setenv("DISTILL3D_HOME", str(tmp_path / "home"))
    params = load_params(nerf_sds, overrides=[
        'prompt="a DSLR photo of a ceramic teapot"', "optimize.steps=3", "optimize.n_samples=16",
        "optimize.checkpoint_every=1000", "preview_views=1", "preview_size=16",
    ])
    with refuse_network():
        out = execute(nerf_sds, params, {"prior": if_folder}, tmp_path / "nerf")
    assert (out / "field.json").is_file() and (out / "field.safetensors").is_file()
    history = json.loads((out / "history.json").read_text())
    losses = history["losses"]["loss_sds"]
    assert len(losses) == 3 and all(abs(v) < float("inf") for v in losses)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 path needs CUDA")
def test_fp16_on_cuda_keeps_fp32_interfaces(if_folder: Path) -> None:
    gpu = load_prior(if_folder, device="cuda")
    assert gpu.dtype == torch.float16 and gpu.unet.dtype == torch.float16 and gpu.text_encoder.dtype == torch.float16
    images = torch.rand(2, 3, R, R, device="cuda", requires_grad=True)
    x0 = gpu.encode_images(images)
    text = gpu.embed(["a red cube"] * 2)
    assert x0.dtype == torch.float32 and text.cond.dtype == torch.float32 and text.cond.device.type == "cuda"
    with torch.no_grad():
        eps, _, _ = gpu.predict_noise_cfg(x0.detach(), torch.tensor([10, 900], device="cuda"), text, 7.5)
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()
