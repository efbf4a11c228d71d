"""The toy prior's construction, persistence and noise-parameterisation maths (untrained, tiny)."""

import pytest
import torch

from distill3d.priors.base import PriorError
from distill3d.priors.toy import ToyPrior, ToyPriorArchitecture, canonical_caption


@pytest.fixture(scope="module")
def tiny_prior():
    torch.manual_seed(0)
    arch = ToyPriorArchitecture(resolution=16, block_out_channels=(16, 32), cross_attention_levels=(False, True),
                                text_width=32, text_layers=1)
    return ToyPrior.build(arch).eval()


def test_canonical_caption_normalises_to_the_training_grammar():
    assert canonical_caption("A cube, FRONT view") == "a white cube, front view"
    assert canonical_caption("an orange striped torus with a face") == "a orange striped torus with a face"
    assert canonical_caption("  ") == ""


def test_unknown_word_is_a_prior_error_listing_known_words(tiny_prior):
    with pytest.raises(PriorError, match="dragon.*known words: a, an, back"):
        tiny_prior.encode_text(["a red dragon"])
    assert "dragon" in tiny_prior.prompt_error("a red dragon")
    assert tiny_prior.prompt_error("a red cube, back view") is None
    assert "empty prompt" in tiny_prior.prompt_error("")


def test_text_encoding_distinguishes_prompts(tiny_prior):
    emb = tiny_prior.encode_text(["a red cube", "a blue cube", ""])
    assert emb.shape == (3, 16, 32)
    assert not torch.allclose(emb[0], emb[1])


def test_save_load_round_trip(tiny_prior, tmp_path):
    tiny_prior.save(tmp_path / "p")
    loaded = ToyPrior.load(tmp_path / "p")
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([5, 700])
    text = tiny_prior.encode_text(["a red cube", "a green cone"])
    assert torch.allclose(tiny_prior.predict_noise(x, t, text), loaded.predict_noise(x, t, text), atol=1e-5)
    assert loaded.space == "pixel" and loaded.resolution == 16


def test_images_map_to_model_space_and_back(tiny_prior):
    img = torch.rand(2, 3, 32, 32, requires_grad=True)
    x0 = tiny_prior.encode_images(img)
    assert x0.shape == (2, 3, 16, 16) and x0.min() >= -1 and x0.max() <= 1
    x0.sum().backward()
    assert img.grad.abs().sum() > 0
    assert torch.allclose(tiny_prior.decode(tiny_prior.encode_images(img[:, :, ::2, ::2].detach())),
                          img[:, :, ::2, ::2].detach(), atol=1e-6)


def test_textureless_prompt_is_the_white_plain_shape(tiny_prior):
    # Textureless shading is a white-albedo Lambertian render: the toy world's "a white <shape>".
    assert tiny_prior.textureless_prompt("an orange striped torus with a face") == "a white torus"
    assert tiny_prior.textureless_prompt("a green cone") == "a white cone"
    assert tiny_prior.prompt_error(tiny_prior.textureless_prompt("a blue cylinder")) is None
