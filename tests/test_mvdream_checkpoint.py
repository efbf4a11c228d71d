"""The released MVDream checkpoint's conversion, on a synthetic checkpoint written here: MVDream's
``MultiViewUNetModel`` state dict (LDM key names and shapes, ``model.diffusion_model.*`` + ``camera_embed.0/2``) at a
tiny width, built from the structure of MVDream's openaimodel.py / attention.py (no download). The converted diffusers
UNet must hold exactly the checkpoint's tensors, one each, and run as a 4-view prior with a tiny SD folder's VAE and
text encoder."""

from __future__ import annotations

import json

import pytest
import torch

from distill3d.cameras import sample_multiview_cameras
from distill3d.priors.base import Conditioning, PriorError
from distill3d.priors.loading import load_prior
from distill3d.priors.multiview import MultiViewAttnProcessor
from distill3d.priors.mvdream import (
    LDM_PREFIX, MVDREAM_UNET_PARAMS, MVDreamPrior, build_mvdream_unet, convert_mvdream_checkpoint, mvdream_unet_config,
)
from tiny_models import TINY_RESOLUTION, TINY_TEXT_DIM, build_tiny_sd

# sd-v2-base.yaml's structure (linear projections, head width fixed, attention at the first levels, none at the last),
# at a tiny width: 32 channels (GroupNorm(32) needs multiples of 32), 3 levels, 2 res blocks per level.
TINY_PARAMS = dict(
    in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[2, 1], num_res_blocks=2,
    channel_mult=[1, 2, 2], num_head_channels=16, use_spatial_transformer=True, use_linear_in_transformer=True,
    transformer_depth=1, context_dim=TINY_TEXT_DIM, legacy=False, camera_dim=16,
)


def ldm_multiview_unet_shapes(p: dict) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of MVDream's MultiViewUNetModel(**p) (use_spatial_transformer, conv_resample,
    no scale-shift norm), as its __init__ lays them out."""
    shapes: dict[str, tuple[int, ...]] = {}
    mc, emb = p["model_channels"], 4 * p["model_channels"]
    lin = p.get("use_linear_in_transformer", False)

    def linear(name, i, o, bias=True):
        shapes[f"{name}.weight"] = (o, i)
        if bias:
            shapes[f"{name}.bias"] = (o,)

    def conv(name, i, o, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (o, i, k, k), (o,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def resblock(name, ch, out):
        norm(f"{name}.in_layers.0", ch)
        conv(f"{name}.in_layers.2", ch, out, 3)
        linear(f"{name}.emb_layers.1", emb, out)
        norm(f"{name}.out_layers.0", out)
        conv(f"{name}.out_layers.3", out, out, 3)
        if ch != out:
            conv(f"{name}.skip_connection", ch, out, 1)

    def transformer3d(name, ch):
        heads = ch // p["num_head_channels"] if "num_head_channels" in p else p["num_heads"]
        inner = ch  # heads * dim_head
        norm(f"{name}.norm", ch)
        linear(f"{name}.proj_in", ch, inner) if lin else conv(f"{name}.proj_in", ch, inner, 1)
        b = f"{name}.transformer_blocks.0"
        for a, ctx in (("attn1", inner), ("attn2", p["context_dim"])):
            linear(f"{b}.{a}.to_q", inner, inner, bias=False)
            linear(f"{b}.{a}.to_k", ctx, inner, bias=False)
            linear(f"{b}.{a}.to_v", ctx, inner, bias=False)
            linear(f"{b}.{a}.to_out.0", inner, inner)
        linear(f"{b}.ff.net.0.proj", inner, inner * 4 * 2)  # GEGLU
        linear(f"{b}.ff.net.2", inner * 4, inner)
        for k in (1, 2, 3):
            norm(f"{b}.norm{k}", inner)
        linear(f"{name}.proj_out", inner, ch) if lin else conv(f"{name}.proj_out", inner, ch, 1)
        assert heads >= 1

    linear("time_embed.0", mc, emb)
    linear("time_embed.2", emb, emb)
    linear("camera_embed.0", p["camera_dim"], emb)
    linear("camera_embed.2", emb, emb)
    conv("input_blocks.0.0", p["in_channels"], mc, 3)
    chans, ch, ds, k = [mc], mc, 1, 1
    for level, mult in enumerate(p["channel_mult"]):
        for _ in range(p["num_res_blocks"]):
            resblock(f"input_blocks.{k}.0", ch, mult * mc)
            ch = mult * mc
            if ds in p["attention_resolutions"]:
                transformer3d(f"input_blocks.{k}.1", ch)
            chans.append(ch)
            k += 1
        if level != len(p["channel_mult"]) - 1:
            conv(f"input_blocks.{k}.0.op", ch, ch, 3)
            chans.append(ch)
            ds *= 2
            k += 1
    resblock("middle_block.0", ch, ch)
    transformer3d("middle_block.1", ch)
    resblock("middle_block.2", ch, ch)
    k = 0
    for level, mult in reversed(list(enumerate(p["channel_mult"]))):
        for i in range(p["num_res_blocks"] + 1):
            resblock(f"output_blocks.{k}.0", ch + chans.pop(), mc * mult)
            ch, j = mc * mult, 1
            if ds in p["attention_resolutions"]:
                transformer3d(f"output_blocks.{k}.1", ch)
                j = 2
            if level and i == p["num_res_blocks"]:
                conv(f"output_blocks.{k}.{j}.conv", ch, ch, 3)
                ds //= 2
            k += 1
    norm("out.0", ch)
    conv("out.2", mc, p["out_channels"], 3)
    return shapes


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, torch.Tensor]:
    """A synthetic MVDream checkpoint: every UNet tensor random (so each is recognisable), plus VAE / text-encoder
    keys that the conversion must ignore."""
    g = torch.Generator().manual_seed(0)
    state = {LDM_PREFIX + k: 0.1 * torch.randn(s, generator=g) for k, s in ldm_multiview_unet_shapes(TINY_PARAMS).items()}
    state["first_stage_model.encoder.conv_in.weight"] = torch.randn(8, 3, 3, 3, generator=g)
    state["cond_stage_model.model.positional_embedding"] = torch.randn(16, TINY_TEXT_DIM, generator=g)
    return state


def test_real_sd21_config_has_mvdreams_shape() -> None:
    """The full-size config: SD 2.1-base's UNet (865 M parameters, linear projections, 5/10/20/20 heads of 64)
    plus the 16 -> 1280 -> 1280 camera MLP, 32 x 32 latents for 256 px."""
    from diffusers import UNet2DConditionModel

    cfg = mvdream_unet_config(MVDREAM_UNET_PARAMS["sd-v2.1-base-4view"])
    assert cfg["sample_size"] == 32 and cfg["cross_attention_dim"] == 1024 and cfg["use_linear_projection"]
    assert list(cfg["attention_head_dim"]) == [5, 10, 20, 20]
    assert cfg["up_block_types"] == ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(cfg)
    emb = unet.class_embedding
    assert (emb.linear_1.in_features, emb.linear_1.out_features, emb.linear_2.out_features) == (16, 1280, 1280)
    n = sum(p.numel() for p in unet.parameters())
    assert 865e6 < n - 16 * 1280 - 1280 - 1280 * 1280 - 1280 < 866e6
    # Every parameter of the diffusers model has its LDM counterpart in MVDream's layout, and vice versa.
    ldm = ldm_multiview_unet_shapes(MVDREAM_UNET_PARAMS["sd-v2.1-base-4view"])
    assert len(ldm) == len(unet.state_dict()) and sum(torch.Size(s).numel() for s in ldm.values()) == n


def test_converted_unet_holds_exactly_the_checkpoints_weights(checkpoint) -> None:
    unet = build_mvdream_unet(checkpoint, TINY_PARAMS, image_size=TINY_RESOLUTION, vae_ch_mult=(1, 2))
    converted = unet.state_dict()
    source = {k[len(LDM_PREFIX):]: v for k, v in checkpoint.items() if k.startswith(LDM_PREFIX)}
    assert len(converted) == len(source)
    by_value = {(tuple(v.shape), float(v.flatten()[0]), float(v.sum())): k for k, v in source.items()}
    matched = {}
    for name, tensor in converted.items():
        key = (tuple(tensor.shape), float(tensor.flatten()[0]), float(tensor.sum()))
        assert key in by_value, f"{name} holds no checkpoint tensor"
        assert torch.equal(tensor, source[by_value[key]]), name
        matched[name] = by_value[key]
    assert len(set(matched.values())) == len(source)  # one to one
    expected = {
        "class_embedding.linear_1.weight": "camera_embed.0.weight",
        "class_embedding.linear_2.bias": "camera_embed.2.bias",
        "time_embedding.linear_1.weight": "time_embed.0.weight",
        "conv_in.weight": "input_blocks.0.0.weight",
        "down_blocks.0.resnets.1.conv2.weight": "input_blocks.2.0.out_layers.3.weight",
        "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q.weight":
            "input_blocks.2.1.transformer_blocks.0.attn1.to_q.weight",
        "down_blocks.0.downsamplers.0.conv.weight": "input_blocks.3.0.op.weight",
        "down_blocks.1.resnets.0.conv_shortcut.weight": "input_blocks.4.0.skip_connection.weight",
        "mid_block.attentions.0.proj_in.weight": "middle_block.1.proj_in.weight",
        "mid_block.resnets.1.time_emb_proj.weight": "middle_block.2.emb_layers.1.weight",
        "up_blocks.0.upsamplers.0.conv.weight": "output_blocks.2.1.conv.weight",
        "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj.weight":
            "output_blocks.5.1.transformer_blocks.0.ff.net.0.proj.weight",
        "up_blocks.1.upsamplers.0.conv.weight": "output_blocks.5.2.conv.weight",
        "conv_out.weight": "out.2.weight",
    }
    for new, old in expected.items():
        assert matched[new] == old, (new, matched[new])
    procs = unet.attn_processors
    assert all(isinstance(v, MultiViewAttnProcessor) == k.endswith("attn1.processor") for k, v in procs.items())


def test_wrong_checkpoints_are_refused(checkpoint) -> None:
    no_camera = {k: v for k, v in checkpoint.items() if "camera_embed" not in k}
    with pytest.raises(PriorError, match="camera MLP"):
        build_mvdream_unet(no_camera, TINY_PARAMS, image_size=TINY_RESOLUTION, vae_ch_mult=(1, 2))
    with pytest.raises(PriorError, match="no model.diffusion_model"):
        build_mvdream_unet({"x": torch.zeros(1)}, TINY_PARAMS)
    wider = dict(TINY_PARAMS, channel_mult=[1, 2, 4])
    with pytest.raises(PriorError, match="size mismatch"):
        build_mvdream_unet(checkpoint, wider, image_size=TINY_RESOLUTION, vae_ch_mult=(1, 2))


def test_converted_folder_loads_as_a_four_view_latent_prior(checkpoint, tmp_path) -> None:
    sd = build_tiny_sd(tmp_path / "sd21")
    ckpt = tmp_path / "sd-tiny-4view.pt"
    torch.save(checkpoint, ckpt)
    out = convert_mvdream_checkpoint(ckpt, sd, tmp_path / "mvdream", model="tiny", unet_params=TINY_PARAMS,
                                     image_size=TINY_RESOLUTION)
    meta = json.loads((out / "prior.json").read_text())
    assert meta["kind"] == "mvdream" and meta["views_per_sample"] == 4 and (out / "vae").is_symlink()
    prior = load_prior(out)
    assert isinstance(prior, MVDreamPrior) and prior.camera_conditioned and prior.views_per_sample == 4
    assert prior.space == "latent" and prior.resolution == TINY_RESOLUTION
    assert torch.equal(prior.unet.class_embedding.linear_1.weight, checkpoint[LDM_PREFIX + "camera_embed.0.weight"])

    g = torch.Generator().manual_seed(0)
    cams = sample_multiview_cameras(1, generator=g)
    x0 = prior.encode_images(torch.rand(4, 3, 24, 24, generator=g))
    assert x0.shape == (4, 4, 8, 8)
    x_t = torch.randn(4, 4, 8, 8, generator=g)
    t = torch.full((4,), 600)
    emb = prior.embed(["a red cube"] * 4)
    with torch.no_grad():
        eps, _, _ = prior.predict_noise_cfg(x_t, t, emb, 7.5, Conditioning(cameras=cams))
        x2 = x_t.clone()
        x2[2] += 1.0
        eps2 = prior.predict_noise(x2, t, emb.cond, Conditioning(cameras=cams))
        eps1 = prior.predict_noise(x_t, t, emb.cond, Conditioning(cameras=cams))
    assert eps.shape == (4, 4, 8, 8) and torch.isfinite(eps).all()
    assert (eps2[0] - eps1[0]).abs().max() > 1e-6  # view 0 attends to view 2 (3D self-attention)
    with pytest.raises(PriorError, match="cameras"):
        prior.predict_noise(x_t, t, emb.cond)

    copied = convert_mvdream_checkpoint(ckpt, sd, tmp_path / "copied", unet_params=TINY_PARAMS,
                                        image_size=TINY_RESOLUTION, link=False)
    assert (copied / "vae").is_dir() and not (copied / "vae").is_symlink()
    with pytest.raises(PriorError, match="lacks"):
        convert_mvdream_checkpoint(ckpt, tmp_path / "mvdream" / "unet", tmp_path / "bad", unet_params=TINY_PARAMS)


def test_cli_converts_a_checkpoint_and_refuses_bad_input_in_one_line(checkpoint, tmp_path, monkeypatch) -> None:
    """`distill3d prior convert-mvdream`: a folder the mvdream method's --prior loads; a missing checkpoint or an
    existing output is one `error:` line naming the fix, exit 2, nothing written."""
    from typer.testing import CliRunner

    import distill3d.priors.mvdream as mvdream
    from flows.cli import app

    monkeypatch.setitem(mvdream.MVDREAM_UNET_PARAMS, "tiny", TINY_PARAMS)
    sd = build_tiny_sd(tmp_path / "sd21")
    ckpt = tmp_path / "sd-tiny-4view.pt"
    torch.save(checkpoint, ckpt)
    runner = CliRunner()
    args = ["prior", "convert-mvdream", "--sd-folder", str(sd), "--model", "tiny"]
    ok = runner.invoke(app, args + ["--checkpoint", str(ckpt), "--out", str(tmp_path / "mv")])
    assert ok.exit_code == 0, ok.output
    assert isinstance(load_prior(tmp_path / "mv"), MVDreamPrior)
    for extra, words in ((["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "a")], "no checkpoint"),
                         (["--checkpoint", str(ckpt), "--out", str(tmp_path / "mv")], "exists")):
        bad = runner.invoke(app, args + extra)
        lines = bad.output.strip().splitlines()
        assert bad.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0]
    assert not (tmp_path / "a").exists()
