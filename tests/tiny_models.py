"""Tiny, randomly initialised models in real on-disk layouts, for tests that must not download anything.

``build_tiny_sd(path)`` writes a Stable Diffusion folder in diffusers layout (``model_index.json``, ``unet/``,
``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) with the real classes, so loading code is exercised
exactly as on SD 1.5 / 2.1, only with 16 px images, 8 px latents and 16-d text embeddings. ``build_tiny_if(path)``
writes a DeepFloyd IF stage I folder the same way (16 px pixel-space UNet with IF's block types, a tiny T5).
``refuse_network()`` makes any connection attempt fail the test.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Literal

import torch

# Every word the tests' prompts use gets a whole-word BPE token; other text still tokenizes letter by letter.
TINY_WORDS = (
    "a", "with", "face", "view", "front", "side", "back", "overhead", "red", "green", "blue", "yellow", "purple",
    "orange", "white", "plain", "striped", "sphere", "cube", "cylinder", "cone", "torus", "photo", "of",
)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TINY_MAX_LENGTH = 16  # the tokenizer pads to this, like CLIP's 77
TINY_RESOLUTION = 16  # pixels; latents are 8 x 8
TINY_TEXT_DIM = 16
# The params.yaml tail of a tiny end-to-end run: the asset stages every method shares, at test sizes.
TINY_MESH_TAIL = """extract_mesh: {resolution: 32, match_views: 2, match_size: 32}
bake_texture: {texture_size: 64}
"""
TINY_ASSET_TAIL = """export_asset: {turntable_frames: 2, turntable_size: 32, views: 2, views_size: 32}
evaluate: {size: 32, n_ring: 4}
"""


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes (printable bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    symbols, extra = {}, 0
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_tiny_clip_vocab(folder: Path, words: tuple[str, ...] = TINY_WORDS) -> tuple[Path, Path]:
    """Write a CLIP-style ``vocab.json`` + ``merges.txt``: all bytes (plain and word-final ``</w>``), left-to-right
    merges that build each of ``words``, then the two special tokens. Returns (vocab path, merges path)."""
    folder.mkdir(parents=True, exist_ok=True)
    byte_syms = _byte_symbols()
    vocab: dict[str, int] = {}
    for s in byte_syms + [s + "</w>" for s in byte_syms]:
        vocab.setdefault(s, len(vocab))
    merges: list[str] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        left = parts[0]
        for right in parts[1:]:
            merge = f"{left} {right}"
            if merge not in merges:
                merges.append(merge)
            left = left + right
            vocab.setdefault(left, len(vocab))
    for special in (BOS, EOS):
        vocab[special] = len(vocab)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def build_tiny_sd(
    path: str | Path,
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
    seed: int = 0,
    depth: bool = False,
) -> Path:
    """Save a tiny random Stable Diffusion pipeline at ``path`` (created) and return it. ``depth``: a UNet with a
    5th input channel, as SD 2 depth's.

    epsilon -> PNDMScheduler config (as SD 1.5 ships), v_prediction -> DDPMScheduler config (as SD 2.1's
    768-v model is used for distillation). Deterministic for a given seed.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok_dir = path / "tokenizer"
    write_tiny_clip_vocab(tok_dir)
    # The files SD 1.5 / 2.1 ship: vocab.json + merges.txt + a slow-tokenizer era config (no tokenizer.json).
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": TINY_MAX_LENGTH, "do_lower_case": True,
        "bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS, "errors": "replace",
    }, indent=2))
    (tok_dir / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}, indent=2))
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION // 2,
        in_channels=5 if depth else 4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=4,
        cross_attention_dim=TINY_TEXT_DIM,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=TINY_RESOLUTION,
    )
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_TEXT_DIM,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=TINY_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = CLIPTextModel(text_config)
    schedule = dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type=prediction_type,
    )
    scheduler = (
        PNDMScheduler(skip_prk_steps=True, steps_offset=1, **schedule)
        if prediction_type == "epsilon"
        else DDPMScheduler(clip_sample=False, steps_offset=1, **schedule)
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    # The pipeline writes the tokenizer the transformers-5 way (tokenizer.json); keep the hand-written files.
    kept = {f.name: f.read_bytes() for f in tok_dir.iterdir()}
    pipe.save_pretrained(str(path))
    for f in tok_dir.iterdir():
        f.unlink()
    for name, data in kept.items():
        (tok_dir / name).write_bytes(data)
    return path


def build_tiny_clip(path: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """Save a tiny random ``CLIPModel`` in transformers layout at ``path`` (created) and return it: config.json +
    weights, a CLIP BPE tokenizer (``write_tiny_clip_vocab``) and a ``preprocessor_config.json`` resizing and
    centre-cropping to ``image_size`` with CLIP's normalisation. Its scores are meaningless; loading is real."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_tiny_clip_vocab(path)
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": TINY_MAX_LENGTH, "do_lower_case": True,
        "bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS, "errors": "replace",
    }, indent=2))
    (path / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}, indent=2))
    tokenizer = CLIPTokenizer.from_pretrained(str(path), local_files_only=True)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": image_size},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_convert_rgb": True,
    }, indent=2))
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=TINY_TEXT_DIM, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=TINY_MAX_LENGTH, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=TINY_TEXT_DIM, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            image_size=image_size, patch_size=8,
        ),
        projection_dim=TINY_TEXT_DIM,
    )
    CLIPModel(config).save_pretrained(str(path))
    return path


@contextlib.contextmanager
def refuse_network():
    """Within the block, any attempt to open a network connection fails the test (no hub may be contacted)."""
    import pytest

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


def build_tiny_t5_tokenizer(words: tuple[str, ...] = TINY_WORDS):
    """A ``T5Tokenizer`` (transformers' tokenizers-backed Unigram, T5's special tokens and Metaspace pre-tokenizer)
    over a tiny vocabulary: whole-word pieces for ``words``, single letters and punctuation for anything else."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]  # T5's ids: pad 0, eos 1, unk 2
    pieces += [("\u2581" + w, -1.0) for w in words] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.'-"]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def build_tiny_if(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random DeepFloyd IF stage I pipeline at ``path`` (created) with ``IFPipeline.save_pretrained`` and
    return it: model_index.json ("IFPipeline"; safety_checker, feature_extractor and watermarker null), a T5 tokenizer
    (``build_tiny_t5_tokenizer``), a 1-layer ``T5EncoderModel`` of width ``TINY_TEXT_DIM``, a
    ``UNet2DConditionModel`` of IF's kind (ResNet-downsample / simple cross-attention blocks, T5 projection, pooled
    text embedding, scale-shift norms, 3 -> 6 channels: epsilon + learned variance) over ``TINY_RESOLUTION`` px, and
    IF's DDPMScheduler (cosine, epsilon, learned_range). Shapes follow diffusers' own IF pipeline tests.
    Deterministic for a given seed."""
    from diffusers import DDPMScheduler, IFPipeline, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer), d_model=TINY_TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    ))
    unet = UNet2DConditionModel(
        sample_size=TINY_RESOLUTION, in_channels=3, out_channels=6, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        norm_num_groups=4, cross_attention_dim=32,  # 32: the cross-attention group norm has 32 groups
        encoder_hid_dim=TINY_TEXT_DIM, attention_head_dim=8, addition_embed_type="text",
        addition_embed_type_num_heads=2, cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
        variance_type="learned_range", thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.5,
    )
    IFPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, scheduler=scheduler, safety_checker=None,
        feature_extractor=None, watermarker=None, requires_safety_checker=False,
    ).save_pretrained(str(path))
    return path


class Killed(RuntimeError):
    """Raised by ``kill_at``'s hook: a training run 'killed' after a given step (resume tests)."""


def kill_at(step_to_die: int):
    """An after-step hook (``toy_training._after_step``) that raises Killed once ``step_to_die`` is done."""
    def after_step(step: int) -> None:
        if step == step_to_die:
            raise Killed(f"killed after step {step}")
    return after_step
