"""The toy world's latent prior: a Stable-Diffusion-shaped model trained from scratch on 64x64 toy renders.

Three phases, each resumable from ``work_dir`` (a killed run continues where it stopped):

1. a diffusers ``AutoencoderKL`` (64x64x3 -> 16x16x4) trained on renders over random solid backgrounds (L1 + a
   small KL term, as SD's autoencoder without its perceptual/GAN terms); reconstruction PSNR is measured on
   renders it never saw (other cameras, and the held-out specs too);
2. the view bank encoded once to latent posteriors (fresh background and random mirror per copy); SD's
   ``scaling_factor`` set to 1 / std of the latents;
3. a ``UNet2DConditionModel`` denoising the scaled latents with the toy text encoder, by the pixel prior's recipe
   (``distill3d.priors.toy_training.train_denoiser``).

Saved as a Stable Diffusion folder (``StableDiffusionPipeline.save_pretrained``: model_index.json, unet/, vae/,
text_encoder/, tokenizer/, scheduler/) that ``distill3d.priors.stable_diffusion.StableDiffusionPrior`` loads like any
SD folder; ``model_index.json`` carries ``"_distill3d": {"world": "toy", ...}`` (``distill3d.priors.toy_world``) and
the training metadata.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.optimization import get_cosine_schedule_with_warmup
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm

from distill3d.cameras import sample_cameras
from distill3d.priors.text import build_text_encoder, build_tokenizer
from distill3d.priors.toy import ToyPriorArchitecture, build_scheduler, build_unet
from distill3d.priors.toy_training import (
    DenoiserRecipe, ToyDataConfig, _after_step, cached_view_bank, save_atomic, train_denoiser,
)
from distill3d.priors.toy_world import MODEL_INDEX_KEY, TOY_WORLD, toy_captions
from distill3d.toyworld.dataset import ViewBank, composite, random_backgrounds
from distill3d.toyworld.render import render_gt_batch
from distill3d.toyworld.vocab import all_specs


class VAEArchitecture(BaseModel):
    """Sizes of the autoencoder: one encoder/decoder level per entry of ``block_out_channels`` (each but the last
    halves the resolution: 3 levels map 64x64 images to 16x16 latents)."""

    model_config = ConfigDict(extra="forbid")

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    # Off: the autoencoder is then fully convolutional, so training on crops (VAERecipe.crop) trains exactly the
    # model used on whole images.
    mid_block_attention: bool = False


class VAERecipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(2000, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    kl_weight: float = Field(1e-6, ge=0)
    # Initial log-variance of the posterior (bias of the encoder's quant_conv). At diffusers' default (about 0, std
    # 1) the sampled latents are mostly noise and the decoder learns slowly (measured: held-out PSNR 17 dB after 400
    # steps, colours wrong); a small initial std lets it learn the images first.
    initial_logvar: float = -6.0
    checkpoint_every: int = Field(250, ge=1)
    # Train on random crops of this size (a multiple of the VAE factor; 0: whole images). Measured: the same
    # held-out PSNR for about half the CPU time of whole 64x64 images.
    crop: int = Field(32, ge=0)
    psnr_views: int = Field(256, ge=1)  # held-out renders the reconstruction PSNR is measured on


class LatentUNetRecipe(DenoiserRecipe):
    flip_probability: float = Field(0.0, ge=0, le=1)  # latents are mirrored as images, before encoding
    latent_copies: int = Field(1, ge=1)  # encodings of each bank view (fresh background and mirror each)


class LatentTrainConfig(ToyDataConfig):
    """Training of the latent toy prior (the `train_latent_prior` section of params.yaml)."""

    @model_validator(mode="after")
    def _crops_need_a_convolutional_vae(self) -> "LatentTrainConfig":
        if 0 < self.vae.crop < self.resolution:
            if self.vae_architecture.mid_block_attention:
                raise ValueError("vae.crop needs vae_architecture.mid_block_attention false (attention sees the "
                                 "whole image, so a model trained on crops would not be the one used)")
            if self.vae.crop % vae_factor(self.vae_architecture):
                raise ValueError(f"vae.crop {self.vae.crop} is not a multiple of the VAE factor "
                                 f"{vae_factor(self.vae_architecture)}")
        return self

    resolution: int = Field(64, ge=8)
    vae_architecture: VAEArchitecture = Field(default_factory=VAEArchitecture)
    vae: VAERecipe = Field(default_factory=VAERecipe)
    unet: LatentUNetRecipe = Field(default_factory=LatentUNetRecipe)
    # UNet and text-encoder sizes (``resolution`` there is ignored: the UNet works at resolution / VAE factor).
    architecture: ToyPriorArchitecture = Field(default_factory=lambda: ToyPriorArchitecture(
        block_out_channels=(48, 64, 96), cross_attention_levels=(False, True, True)))
    save_fp16: bool = False  # store UNet / VAE / text-encoder weights as the fp16 variant (half the size)


def build_vae(arch: VAEArchitecture, resolution: int) -> AutoencoderKL:
    n = len(arch.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=arch.block_out_channels,
        layers_per_block=arch.layers_per_block, latent_channels=arch.latent_channels,
        norm_num_groups=arch.norm_num_groups, sample_size=resolution, mid_block_add_attention=arch.mid_block_attention,
    )


def vae_factor(arch: VAEArchitecture) -> int:
    return 2 ** (len(arch.block_out_channels) - 1)


# ---------------------------------------------------------------------------------------------------- phase 1: VAE
def psnr_views(cfg: LatentTrainConfig, progress: bool = False) -> torch.Tensor:
    """(N, 3, R, R) renders in [0, 1] no training view has: cameras of another seed, every spec (the held-out ones
    too), random backgrounds."""
    gen = torch.Generator().manual_seed(cfg.seed + 7919)
    specs = all_specs()
    n = cfg.vae.psnr_views
    idx = torch.randint(len(specs), (n,), generator=gen)
    cams = sample_cameras(n, generator=gen)
    out = render_gt_batch([specs[int(i)] for i in idx], cams, cfg.resolution, ssaa=cfg.bank_ssaa, background=0.0)
    bg = random_backgrounds(n, gen, cfg.background_white_probability)
    return composite(out["rgb"].permute(0, 3, 1, 2), out["mask"][:, None], bg).clamp(0, 1)


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, images: torch.Tensor, batch: int = 64) -> float:
    """Mean PSNR (dB) of ``vae``'s reconstructions (posterior mean) of (N, 3, R, R) images in [0, 1]."""
    vals = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch] * 2 - 1
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        mse = ((rec - x) / 2).square().mean(dim=(1, 2, 3)).clamp_min(1e-10)
        vals += (-10 * torch.log10(mse)).tolist()
    return sum(vals) / len(vals)


def train_vae(cfg: LatentTrainConfig, bank: ViewBank, work_dir: Path | None, progress: bool = True) -> tuple[AutoencoderKL, dict]:
    """Phase 1: train the autoencoder on bank views over fresh random backgrounds (resumable). Returns it (eval
    mode, frozen) and its statistics (held-out reconstruction PSNR, times)."""
    done = work_dir / "vae" if work_dir else None
    if done is not None and (done / "config.json").exists():
        stats = json.loads((work_dir / "vae_stats.json").read_text())
        return AutoencoderKL.from_pretrained(done, local_files_only=True).eval().requires_grad_(False), stats
    rec = cfg.vae
    torch.manual_seed(cfg.seed)
    vae = build_vae(cfg.vae_architecture, cfg.resolution)
    with torch.no_grad():
        vae.quant_conv.bias[cfg.vae_architecture.latent_channels:] = rec.initial_logvar
    opt = torch.optim.AdamW(vae.parameters(), lr=rec.lr, weight_decay=0.0)
    lr_sched = get_cosine_schedule_with_warmup(opt, rec.warmup_steps, rec.steps)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    step, losses, seconds, cpu_seconds = 0, [], 0.0, 0.0
    ckpt = work_dir / "vae_checkpoint.pt" if work_dir else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        lr_sched.load_state_dict(state["lr_sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        step, losses, seconds, cpu_seconds = state["step"], state["losses"], state["seconds"], state["cpu_seconds"]
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    vae.train()
    bar = tqdm(total=rec.steps, initial=step, desc="train VAE", disable=not progress)
    while step < rec.steps:
        idx = torch.randint(len(bank), (rec.batch_size,), generator=gen)
        x = bank.images(idx, random_backgrounds(rec.batch_size, gen, cfg.background_white_probability))
        flip = torch.rand(rec.batch_size, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x) * 2 - 1
        if 0 < rec.crop < cfg.resolution:
            f = vae_factor(cfg.vae_architecture)
            top, left = (torch.randint(0, (cfg.resolution - rec.crop) // f + 1, (2,), generator=gen) * f).tolist()
            x = x[:, :, top:top + rec.crop, left:left + rec.crop]
        posterior = vae.encode(x).latent_dist
        out = vae.decode(posterior.sample(generator=gen)).sample
        loss = (out - x).abs().mean() + rec.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
        if ckpt is not None and (step % rec.checkpoint_every == 0 or step == rec.steps):
            save_atomic(ckpt, {"vae": vae.state_dict(), "opt": opt.state_dict(), "lr_sched": lr_sched.state_dict(),
                               "gen": gen.get_state(), "torch_rng": torch.get_rng_state(), "step": step,
                               "losses": losses, "seconds": seconds + time.perf_counter() - t_wall,
                               "cpu_seconds": cpu_seconds + time.process_time() - t_cpu})
        _after_step(step)
    bar.close()
    vae.eval().requires_grad_(False)
    stats = {
        "steps": step, "final_loss": sum(losses[-100:]) / max(1, len(losses[-100:])),
        "loss_curve": [sum(losses[i:i + 100]) / len(losses[i:i + 100]) for i in range(0, len(losses), 100)],
        "seconds": round(seconds + time.perf_counter() - t_wall, 1),
        "cpu_seconds": round(cpu_seconds + time.process_time() - t_cpu, 1),
        "psnr_held_out": round(reconstruction_psnr(vae, psnr_views(cfg)), 2), "psnr_views": rec.psnr_views,
        "parameters": sum(p.numel() for p in vae.parameters()),
    }
    if done is not None:
        vae.save_pretrained(done)
        (work_dir / "vae_stats.json").write_text(json.dumps(stats))
    return vae, stats


# ------------------------------------------------------------------------------------------------ phase 2: latents
@torch.no_grad()
def encode_bank(cfg: LatentTrainConfig, bank: ViewBank, vae: AutoencoderKL, work_dir: Path | None,
                progress: bool = True, batch: int = 64) -> dict:
    """Phase 2: posterior mean and std (N * copies, C, h, w) of the bank views over fresh random backgrounds
    (mirrored at random), and the spec/view index of each; cached in ``work_dir``."""
    cache = work_dir / "latents.pt" if work_dir else None
    if cache is not None and cache.exists():
        return torch.load(cache, weights_only=False)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    means, stds, index = [], [], []
    copies = cfg.unet.latent_copies
    for c in range(copies):
        for start in tqdm(range(0, len(bank), batch), desc=f"encode views ({c + 1}/{copies})", disable=not progress):
            idx = torch.arange(start, min(start + batch, len(bank)))
            x = bank.images(idx, random_backgrounds(len(idx), gen, cfg.background_white_probability))
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            post = vae.encode(x * 2 - 1).latent_dist
            means.append(post.mean)
            stds.append(post.std)
            index.append(idx)
    out = {"mean": torch.cat(means), "std": torch.cat(stds), "index": torch.cat(index)}
    if cache is not None:
        save_atomic(cache, out)
    return out


def latent_scaling_factor(latents: dict, seed: int = 0, n: int = 4096) -> float:
    """1 / std of posterior samples of the latents (SD's ``scaling_factor`` makes the diffusion input unit-variance)."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(latents["mean"]), generator=gen)[:n]
    z = latents["mean"][idx] + latents["std"][idx] * torch.randn(latents["mean"][idx].shape, generator=gen)
    return float(1.0 / z.std())


# ----------------------------------------------------------------------------------------------------- the folder
def save_sd_folder(path: Path, vae, unet, text_encoder, tokenizer, scheduler, meta: dict, fp16: bool = False) -> None:
    """Write a diffusers Stable Diffusion folder and mark it as trained on the toy world in model_index.json."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    if fp16:
        pipe.to(torch.float16)
    pipe.save_pretrained(path, variant="fp16" if fp16 else None)
    index_file = Path(path) / "model_index.json"
    index = json.loads(index_file.read_text())
    index[MODEL_INDEX_KEY] = {"world": TOY_WORLD, **meta}
    index_file.write_text(json.dumps(index, indent=2))
    if fp16:
        pipe.to(torch.float32)


def train_latent_prior(cfg: LatentTrainConfig, out_dir: Path, work_dir: Path | None = None,
                       progress: bool = True) -> dict:
    """Train the latent toy prior (VAE, then UNet + text encoder) and save it as an SD folder in ``out_dir``."""
    t_start, c_start = time.perf_counter(), time.process_time()
    work_dir = Path(work_dir) if work_dir is not None else None
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    bank = cached_view_bank(cfg, cfg.resolution, work_dir, progress)
    t_bank = time.perf_counter() - t_start
    vae, vae_stats = train_vae(cfg, bank, work_dir, progress)
    t0 = time.perf_counter()
    latents = encode_bank(cfg, bank, vae, work_dir, progress)
    t_encode = time.perf_counter() - t0
    scaling = latent_scaling_factor(latents, cfg.seed)
    vae.register_to_config(scaling_factor=scaling)

    arch = cfg.architecture
    factor = vae_factor(cfg.vae_architecture)
    torch.manual_seed(cfg.seed)
    tokenizer = build_tokenizer(arch.max_length)
    text_encoder = build_text_encoder(tokenizer, arch.text_width, arch.text_layers)
    unet = build_unet(arch, channels=cfg.vae_architecture.latent_channels, sample_size=cfg.resolution // factor)
    # steps_offset 1, as SD's scheduler configs (StableDiffusionPipeline warns about, and rewrites, 0)
    scheduler = DDPMScheduler.from_config(build_scheduler(arch).config, steps_offset=1)
    rec = cfg.unet
    mean, std, view_of = latents["mean"], latents["std"], latents["index"]

    def make_batch(gen: torch.Generator, rng: random.Random, n: int) -> tuple[torch.Tensor, list[str]]:
        idx = torch.randint(len(mean), (n,), generator=gen)
        z = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)
        captions = bank.captions(view_of[idx], rng, rec.view_phrase_probability, rec.caption_drop_probability)
        return z * scaling, captions

    def tokenize(captions: list[str]) -> torch.Tensor:
        return tokenizer(toy_captions(captions), padding="max_length", max_length=arch.max_length, truncation=True,
                         return_tensors="pt")["input_ids"]

    unet_stats = train_denoiser(unet, text_encoder, tokenize, scheduler, rec, make_batch, cfg.seed,
                                work_dir / "unet_checkpoint.pt" if work_dir else None, "train latent UNet", progress)
    stats = {
        "vae": {k: v for k, v in vae_stats.items()}, "unet": unet_stats, "scaling_factor": scaling,
        "seconds_bank": round(t_bank, 1), "seconds_encode": round(t_encode, 1),
        "seconds_total": round(time.perf_counter() - t_start, 1),
        "cpu_seconds_this_run": round(time.process_time() - c_start, 1), "held_out": list(cfg.held_out),
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
    }
    meta = {"resolution": cfg.resolution, "training": cfg.model_dump(mode="json"), "stats": stats}
    save_sd_folder(Path(out_dir), vae, unet, text_encoder, tokenizer, scheduler, meta, fp16=cfg.save_fp16)
    return stats


