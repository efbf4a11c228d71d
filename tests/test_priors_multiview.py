"""The multi-view toy prior (MVDream on the toy world): camera convention, 3D self-attention, the Prior interface,
persistence, the group data and resumable training. Tiny random models; seconds."""

from __future__ import annotations

import json
import random

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from distill3d.cameras import sample_multiview_cameras, spherical_cameras
from distill3d.priors.base import Conditioning, PriorError
from distill3d.priors.loading import load_prior
from distill3d.priors.multiview import (
    MultiViewArchitecture, MultiViewAttnProcessor, MultiViewToyPrior, mvdream_camera,
)
from distill3d.toyworld.render import render_gt_batch
from distill3d.toyworld.vocab import parse_prompt

TINY = MultiViewArchitecture(resolution=16, block_out_channels=(16, 32), cross_attention_levels=(False, True),
                             text_width=16, text_layers=1)


@pytest.fixture(scope="module")
def prior() -> MultiViewToyPrior:
    torch.manual_seed(0)
    p = MultiViewToyPrior.build(TINY)
    # A fresh UNet's last layers are zero-initialised (diffusers): randomise every weight so outputs depend on inputs.
    with torch.no_grad():
        for w in p.unet.parameters():
            w.normal_(0.0, 0.2)
    return p.eval()


def _noise(prior, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, prior.resolution, prior.resolution, generator=g)


def test_camera_embedding_of_known_cameras_is_mvdreams() -> None:
    """MVDream's get_camera(elevation=e, azimuth_start=a) (OpenGL c2w, then convert_opengl_to_blender, then the
    translation normalised): worked out by hand for two cameras."""
    cams = spherical_cameras([0.0, 90.0], [0.0, 30.0], radius=[2.6, 1.7])
    c = 3 ** 0.5 / 2
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0, -1, -1, 0, 1, 0, 0, 0, 0, 0, 1],
        [0, -0.5, c, c, 1, 0, 0, 0, 0, c, 0.5, 0.5, 0, 0, 0, 1],
    ])
    assert torch.allclose(mvdream_camera(cams), expected, atol=1e-6)


def test_multiview_attention_is_self_attention_over_the_groups_tokens() -> None:
    """(b f) l c -> b (f l) c: the processor equals plain attention over a group's concatenated tokens."""
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    x = torch.randn(8, 5, 16)  # 2 groups of 4 views, 5 tokens each
    with torch.no_grad():
        mv = MultiViewAttnProcessor(4)(attn, x)
        ref = AttnProcessor2_0()(attn, x.reshape(2, 20, 16)).reshape(8, 5, 16)
        single = MultiViewAttnProcessor(1)(attn, x)
        per_view = AttnProcessor2_0()(attn, x)
    assert torch.allclose(mv, ref, atol=1e-6)
    assert torch.allclose(single, per_view, atol=1e-6)
    assert not torch.allclose(mv, per_view, atol=1e-3)
    with pytest.raises(ValueError, match="groups"):
        MultiViewAttnProcessor(4)(attn, x[:6])
    with pytest.raises(ValueError, match="self-attention"):
        MultiViewAttnProcessor(4)(attn, x, encoder_hidden_states=x)


def test_unet_has_the_camera_mlp_and_no_other_new_weight(prior) -> None:
    from distill3d.priors.toy import ToyPrior

    d = 4 * TINY.block_out_channels[0]
    emb = prior.unet.class_embedding
    assert (emb.linear_1.in_features, emb.linear_1.out_features, emb.linear_2.out_features) == (16, d, d)
    plain = set(ToyPrior.build(TINY).unet.state_dict())
    assert set(prior.unet.state_dict()) - plain == {f"class_embedding.linear_{i}.{p}" for i in (1, 2)
                                                     for p in ("weight", "bias")}
    procs = prior.unet.attn_processors
    assert all(isinstance(v, MultiViewAttnProcessor) == k.endswith("attn1.processor") for k, v in procs.items())
    assert any(isinstance(v, MultiViewAttnProcessor) for v in procs.values())


def test_views_of_a_group_see_each_other_and_groups_stay_apart(prior) -> None:
    cams = sample_multiview_cameras(2, generator=torch.Generator().manual_seed(1))
    x = _noise(prior, 8)
    t = torch.full((8,), 500)
    text = prior.encode_text(["a red cube"] * 8)
    with torch.no_grad():
        base = prior.predict_noise(x, t, text, Conditioning(cameras=cams))
        x2 = x.clone()
        x2[1] += 1.0  # another view of group 0
        other_view = prior.predict_noise(x2, t, text, Conditioning(cameras=cams))
        x3 = x.clone()
        x3[5] += 1.0  # a view of group 1
        other_group = prior.predict_noise(x3, t, text, Conditioning(cameras=cams))
        cams2 = sample_multiview_cameras(2, generator=torch.Generator().manual_seed(2))
        other_cams = prior.predict_noise(x, t, text, Conditioning(cameras=cams2))
    assert (other_view[0] - base[0]).abs().max() > 1e-4  # view 0 attends to view 1
    assert torch.allclose(other_group[:4], base[:4], atol=1e-5)  # group 0 never sees group 1
    assert (other_cams - base).abs().max() > 1e-4  # the cameras condition the prediction
    assert prior.views_per_sample == 4 and prior.camera_conditioned


def test_predict_noise_needs_cameras_in_whole_groups(prior) -> None:
    text = prior.encode_text(["a red cube"] * 6)
    cams = sample_multiview_cameras(2)
    with pytest.raises(PriorError, match="cameras"):
        prior.predict_noise(_noise(prior, 4), torch.full((4,), 10), text[:4])
    with pytest.raises(PriorError, match="groups of 4"):
        prior.predict_noise(_noise(prior, 6), torch.full((6,), 10), text, Conditioning(cameras=cams[list(range(6))]))
    with pytest.raises(PriorError, match="groups of 4"):
        prior.predict_noise(_noise(prior, 4), torch.full((4,), 10), text[:4], Conditioning(cameras=cams))


def test_cfg_batch_of_two_groups_and_captions_without_view_words(prior) -> None:
    cams = sample_multiview_cameras(1)
    emb = prior.embed(["a red cube"] * 4)
    with torch.no_grad():
        guided, cond, uncond = prior.predict_noise_cfg(_noise(prior, 4), torch.full((4,), 300), emb, 3.0,
                                                       Conditioning(cameras=cams))
    assert guided.shape == (4, 3, 16, 16) and torch.allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert torch.equal(prior.tokenize(["a red cube, back view"]), prior.tokenize(["a red cube"]))
    assert torch.equal(prior.tokenize([""]), prior.tokenize([""]))
    with pytest.raises(PriorError, match="does not know"):
        prior.tokenize(["a red dodecahedron"])


def test_save_and_load_prior_round_trip(prior, tmp_path) -> None:
    prior.save(tmp_path / "mv", info={"note": "test"})
    meta = json.loads((tmp_path / "mv" / "prior.json").read_text())
    assert meta["kind"] == "toy_multiview" and meta["views_per_sample"] == 4
    loaded = load_prior(tmp_path / "mv")
    assert isinstance(loaded, MultiViewToyPrior)
    assert any(isinstance(v, MultiViewAttnProcessor) for v in loaded.unet.attn_processors.values())
    cams = sample_multiview_cameras(1)
    x, t = _noise(prior, 4), torch.full((4,), 700)
    with torch.no_grad():
        a = prior.predict_noise(x, t, prior.encode_text(["a blue torus"] * 4), Conditioning(cameras=cams))
        b = loaded.predict_noise(x, t, loaded.encode_text(["a blue torus"] * 4), Conditioning(cameras=cams))
    assert torch.allclose(a, b, atol=1e-5)


def test_multiview_cameras_are_mvdreams_groups() -> None:
    cams = sample_multiview_cameras(50, generator=torch.Generator().manual_seed(0))
    az = cams.azimuth.view(50, 4)
    steps = (az - az[:, :1]) % 360.0
    assert torch.allclose(steps, torch.tensor([0.0, 90.0, 180.0, 270.0]).expand(50, 4), atol=1e-3)
    for f in ("elevation", "radius", "fov"):
        v = getattr(cams, f).view(50, 4)
        assert torch.equal(v, v[:, :1].expand(50, 4))
    assert cams.azimuth.min() >= -180.0 and cams.azimuth.max() < 180.0
    assert az[:, 0].std() > 50.0 and cams.elevation.view(50, 4)[:, 0].std() > 5.0  # offsets and elevations vary
    assert torch.allclose(cams.position.norm(dim=-1), cams.radius, atol=1e-5)


def test_group_bank_backgrounds_captions_and_mirroring() -> None:
    from distill3d.priors.multiview_training import render_group_bank

    held = {parse_prompt("a red cube with a face")}
    bank = render_group_bank(12, 16, held, seed=3, ssaa=1, progress=False)
    assert bank.images.shape == (12, 4, 3, 16, 16) and bank.masks.shape == (12, 4, 16, 16)
    assert all(s not in held for s in bank.specs)
    g = torch.Generator().manual_seed(0)
    idx = torch.arange(12)
    x0, cams = bank.batch(idx, g, flip_probability=0.0, white_probability=0.0)
    rgb = (x0 + 1) / 2
    bg_pixels = bank.masks.view(48, 16, 16) == 0
    per_group = rgb.view(12, 4, 3, 16, 16)
    for i in range(12):  # one solid background per group, the same in its 4 views
        vals = per_group[i].permute(0, 2, 3, 1)[bg_pixels.view(12, 4, 16, 16)[i]]
        assert (vals - vals[0]).abs().max() < 2e-2
    assert torch.allclose(cams.azimuth, bank.azimuth.reshape(-1))
    # Mirrored groups: each image is the direct render (same silhouette) from azimuth -a, azimuths increasing again.
    xf, cf = bank.batch(idx[:4], torch.Generator().manual_seed(0), flip_probability=1.0, white_probability=1.0)
    specs = [bank.specs[int(bank.spec_index[i])] for i in range(4) for _ in range(4)]
    direct = render_gt_batch(specs, cf, 16)["mask"] > 0.5
    mirrored = bank.masks[:4].reshape(16, 16, 16).flip(-1)[[k + 4 * g for g in range(4) for k in (0, 3, 2, 1)]] > 127
    assert (direct == mirrored).float().mean() > 0.98
    steps = (cf.azimuth.view(4, 4) - cf.azimuth.view(4, 4)[:, :1]) % 360.0
    assert torch.allclose(steps, torch.tensor([0.0, 90.0, 180.0, 270.0]).expand(4, 4), atol=1e-3)
    caps = bank.captions(idx, random.Random(0), 0.5)
    groups = [caps[4 * i:4 * i + 4] for i in range(12)]
    assert all(len(set(c)) == 1 for c in groups) and {"" in c for c in groups} == {True, False}
    assert all("view" not in c[0] for c in groups)


def test_training_resumes_where_a_killed_run_stopped(tmp_path, monkeypatch) -> None:
    """A run killed after its step-2 checkpoint, re-run with the same work dir, ends with exactly the weights of an
    uninterrupted run."""
    import distill3d.priors.multiview_training as mt

    cfg = mt.MultiViewTrainConfig(steps=4, groups_per_batch=2, bank_groups=8, bank_ssaa=1, checkpoint_every=2,
                                  warmup_steps=1, architecture=TINY)
    torch.set_num_threads(1)
    straight = mt.train_multiview_prior(cfg, tmp_path / "a", tmp_path / "wa", progress=False)

    calls = {"n": 0}
    real_loss = mt.multiview_loss

    def dying_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(mt, "multiview_loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        mt.train_multiview_prior(cfg, tmp_path / "b", tmp_path / "wb", progress=False)
    assert not (tmp_path / "b").exists() and (tmp_path / "wb" / "train_checkpoint.pt").exists()
    monkeypatch.setattr(mt, "multiview_loss", real_loss)
    resumed = mt.train_multiview_prior(cfg, tmp_path / "b", tmp_path / "wb", progress=False)
    assert resumed["steps"] == straight["steps"] == 4
    a, b = load_prior(tmp_path / "a"), load_prior(tmp_path / "b")
    for (k, va), vb in zip(a.unet.state_dict().items(), b.unet.state_dict().values()):
        assert torch.equal(va, vb), k
    assert json.loads((tmp_path / "b" / "prior.json").read_text())["kind"] == "toy_multiview"


def test_multiview_attention_on_feature_maps_and_which_layers_get_it(prior) -> None:
    """A plain self-attention block (diffusers' AttnDownBlock2D attention: (B F, C, H, W) input, group norm, residual)
    is attended over the group's tokens too; set_multiview_attention picks every self-attention, no cross-attention."""
    from distill3d.priors.multiview import set_multiview_attention

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8, norm_num_groups=4, residual_connection=True,
                     bias=True, upcast_softmax=True, _from_deprecated_attn_block=True).eval()
    x = torch.randn(8, 16, 3, 3)
    with torch.no_grad():
        mv = MultiViewAttnProcessor(4)(attn, x)
        tokens = x.flatten(2).transpose(1, 2).reshape(2, 36, 16)
        ref = AttnProcessor2_0()(attn, tokens).reshape(8, 9, 16).transpose(1, 2).reshape(8, 16, 3, 3)
    assert mv.shape == x.shape and torch.allclose(mv, ref, atol=1e-5)
    n = set_multiview_attention(prior.unet, 4)
    kinds = {k: (type(v).__name__, prior.unet.get_submodule(k[:-10]).is_cross_attention)
             for k, v in prior.unet.attn_processors.items()}
    assert n == sum(not cross for _, cross in kinds.values()) > 0
    assert all((name == "MultiViewAttnProcessor") != cross for name, cross in kinds.values())


def test_detail_loss_weight_reweights_pixels_of_detailed_images_only(prior) -> None:
    """multiview_loss with detail weights: a flat image (no local contrast) keeps its loss, an image with a stripe gets
    a different one (more weight on the stripe's edges), the same noise and t drawn either way."""
    import distill3d.priors.multiview_training as mt

    cams = sample_multiview_cameras(1, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = prior.text_encoder(prior.tokenize(["a red cube"] * 4)).last_hidden_state

        def loss(x0, w):
            return mt.multiview_loss(prior, x0, cams, text, torch.Generator().manual_seed(1), 5.0, w).item()

        flat = torch.full((4, 3, 16, 16), 0.3)
        striped = flat.clone()
        striped[:, :, 6:9] = -0.8
        assert loss(flat, 1.0) == pytest.approx(loss(flat, 0.0), rel=1e-6)
        assert abs(loss(striped, 1.0) - loss(striped, 0.0)) > 1e-3 * loss(striped, 0.0)
