"""Training of the toy priors on rendered toy-world views (denoising diffusion, Ho et al. 2020).

The recipe shared by the pixel prior (``train_toy_prior``) and the latent prior's UNet
(``distill3d.priors.latent_training``): v-prediction on a cosine schedule (Salimans & Ho 2022) with Min-SNR-gamma
loss weighting (Hang et al. 2023), the text encoder trained with the UNet, an EMA of both (the EMA is what is saved),
~10% empty captions for classifier-free guidance and DreamFusion's view phrases on most captions. Images are
composited over random solid backgrounds (``distill3d.toyworld.dataset``) and mirrored at random.

Resumable: the view bank is cached in ``work_dir`` and a checkpoint (weights, optimiser, EMA, LR schedule, RNG
states, step, loss history, time spent) is written there every ``checkpoint_every`` steps; a re-run with the same
``work_dir`` continues from it and ends in the same state as an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from distill3d.priors.toy import ToyPrior, ToyPriorArchitecture
from distill3d.toyworld.dataset import ViewBank, random_backgrounds, render_view_bank
from distill3d.toyworld.vocab import ObjectSpec, parse_prompt

# Held out of training and sampled by the checks (distill3d.priors.toy_checks): one plain object per check of colour
# and shape, a striped one (stripe check) and one with a face (face check), on a shape whose ground-truth front views
# the face detector finds at 32 px. The benchmark prompts (red cube, blue torus, yellow cylinder, green cone) and
# every "a white <shape>" (the textureless prompts) stay in training.
DEFAULT_HELD_OUT = ("a purple cube", "a red cone", "a blue striped cylinder", "an orange sphere with a face")


class DenoiserRecipe(BaseModel):
    """Optimisation of a text-conditioned denoiser (shared by the pixel prior and the latent prior's UNet)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(4000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(200, ge=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    min_snr_gamma: float = Field(5.0, gt=0)
    caption_drop_probability: float = Field(0.1, ge=0, le=1)
    view_phrase_probability: float = Field(0.7, ge=0, le=1)
    flip_probability: float = Field(0.5, ge=0, le=1)  # mirror images: the toy world is left-right symmetric
    # Per-pixel loss weights 1 + detail_loss_weight * (local contrast of x_0 / its image mean), renormalised to mean
    # 1 per image: more of the gradient goes to edges, stripes and face features, the few pixels that carry them.
    # Per-pixel weights that do not depend on the prediction leave the minimiser (the posterior mean) unchanged.
    detail_loss_weight: float = Field(0.0, ge=0)
    checkpoint_every: int = Field(500, ge=1)


class ToyDataConfig(BaseModel):
    """The view bank and what a batch is made of (shared by both priors)."""

    model_config = ConfigDict(extra="forbid")

    bank_views: int = Field(16000, ge=1)
    bank_ssaa: int = Field(2, ge=1)
    background_white_probability: float = Field(0.1, ge=0, le=1)
    face_front_probability: float = Field(0.5, ge=0, le=1)
    seed: int = 0
    held_out: tuple[str, ...] = DEFAULT_HELD_OUT


class ToyTrainConfig(DenoiserRecipe, ToyDataConfig):
    """Training recipe of the pixel toy prior (the `train_prior` section of params.yaml)."""

    architecture: ToyPriorArchitecture = Field(default_factory=ToyPriorArchitecture)


def held_out_specs(captions: tuple[str, ...]) -> set[ObjectSpec]:
    return {parse_prompt(c) for c in captions}


def save_atomic(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def cached_view_bank(data: ToyDataConfig, size: int, work_dir: Path | None, progress: bool = True) -> ViewBank:
    """The view bank of ``data`` at ``size`` px, rendered once and cached in ``work_dir`` (deterministic)."""
    cache = work_dir / f"view_bank_{size}.pt" if work_dir else None
    if cache is not None and cache.exists():
        return ViewBank.load(cache)
    bank = render_view_bank(data.bank_views, size, held_out_specs(data.held_out), seed=data.seed, ssaa=data.bank_ssaa,
                            face_front_probability=data.face_front_probability, progress=progress)
    if cache is not None:
        bank.save(cache)
    return bank


def detail_weights(x0: torch.Tensor, strength: float) -> torch.Tensor:
    """(B, 1, H, W) per-pixel loss weights with mean 1 per image: 1 + strength * d / mean(d), d the local contrast
    |x0 - its 3x3 box blur| (mean over channels) of the clean images x0 (B, C, H, W)."""
    blur = F.avg_pool2d(F.pad(x0, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    d = (x0 - blur).abs().mean(dim=1, keepdim=True)
    w = 1.0 + strength * d / d.mean(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return w / w.mean(dim=(2, 3), keepdim=True)


def _after_step(step: int) -> None:
    """Called after every optimiser step (tests replace it to simulate a run killed mid-way)."""


# A batch maker: (generator, python rng, batch size) -> (x_0 in model space (B, C, h, w), captions)
BatchFn = Callable[[torch.Generator, random.Random, int], tuple[torch.Tensor, list[str]]]


def train_denoiser(
    unet: UNet2DConditionModel, text_encoder: torch.nn.Module, tokenize: Callable[[list[str]], torch.Tensor],
    sched: DDPMScheduler, recipe: DenoiserRecipe, make_batch: BatchFn, seed: int, checkpoint: Path | None,
    desc: str = "train", progress: bool = True,
) -> dict:
    """Train ``unet`` and ``text_encoder`` together on batches from ``make_batch``; leave the EMA weights in them.

    Resumes from ``checkpoint`` when it exists and writes it every ``recipe.checkpoint_every`` steps and at the end.
    Returns statistics: steps, final_loss, loss_curve (means per 100 steps), seconds (wall) and cpu_seconds (process
    CPU time) of the optimisation, accumulated over resumed runs.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    unet.train()
    text_encoder.train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    lr_sched = get_cosine_schedule_with_warmup(opt, recipe.warmup_steps, recipe.steps)
    ema = EMAModel(params, decay=recipe.ema_decay, use_ema_warmup=True)
    alphas = sched.alphas_cumprod.float()
    T = sched.config.num_train_timesteps
    v_pred = sched.config.prediction_type == "v_prediction"
    gen = torch.Generator().manual_seed(seed + 1)

    step, losses, seconds, cpu_seconds = 0, [], 0.0, 0.0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        lr_sched.load_state_dict(state["lr_sched"])
        ema.load_state_dict(state["ema"])
        gen.set_state(state["gen"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        step, losses = state["step"], state["losses"]
        seconds, cpu_seconds = state.get("seconds", 0.0), state.get("cpu_seconds", 0.0)

    def save() -> None:
        save_atomic(checkpoint, {
            "unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "opt": opt.state_dict(),
            "lr_sched": lr_sched.state_dict(), "ema": ema.state_dict(), "gen": gen.get_state(),
            "rng": rng.getstate(), "torch_rng": torch.get_rng_state(), "step": step, "losses": losses,
            "seconds": seconds + time.perf_counter() - t_wall, "cpu_seconds": cpu_seconds + time.process_time() - t_cpu,
        })

    t_wall, t_cpu = time.perf_counter(), time.process_time()
    bar = tqdm(total=recipe.steps, initial=step, desc=desc, disable=not progress)
    while step < recipe.steps:
        x0, captions = make_batch(gen, rng, recipe.batch_size)
        flip = torch.rand(x0.shape[0], generator=gen) < recipe.flip_probability
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        text = text_encoder(tokenize(captions)).last_hidden_state
        t = torch.randint(T, (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = sched.add_noise(x0, noise, t)
        target = sched.get_velocity(x0, noise, t) if v_pred else noise
        pred = unet(x_t, t, encoder_hidden_states=text).sample
        snr = alphas[t] / (1 - alphas[t])
        # Min-SNR-gamma weights, expressed for the v (or epsilon) target.
        weight = snr.clamp_max(recipe.min_snr_gamma) / (snr + 1 if v_pred else snr)
        err = F.mse_loss(pred, target, reduction="none")
        if recipe.detail_loss_weight > 0:
            err = err * detail_weights(x0, recipe.detail_loss_weight)
        loss = (weight * err.mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_sched.step()
        ema.step(params)
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
        if checkpoint is not None and (step % recipe.checkpoint_every == 0 or step == recipe.steps):
            save()
        _after_step(step)
    bar.close()
    seconds += time.perf_counter() - t_wall
    cpu_seconds += time.process_time() - t_cpu
    ema.copy_to(params)
    unet.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    tail = losses[-200:]
    return {
        "steps": step, "final_loss": sum(tail) / max(1, len(tail)),
        "loss_curve": [sum(losses[i:i + 100]) / len(losses[i:i + 100]) for i in range(0, len(losses), 100)],
        "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
    }


def pixel_batches(bank: ViewBank, data: ToyDataConfig, recipe: DenoiserRecipe) -> BatchFn:
    """Batches of bank views over fresh random backgrounds, in the pixel prior's space [-1, 1]."""

    def make(gen: torch.Generator, rng: random.Random, n: int) -> tuple[torch.Tensor, list[str]]:
        idx = torch.randint(len(bank), (n,), generator=gen)
        background = random_backgrounds(n, gen, data.background_white_probability)
        captions = bank.captions(idx, rng, recipe.view_phrase_probability, recipe.caption_drop_probability)
        return bank.images(idx, background) * 2.0 - 1.0, captions

    return make


def train_toy_prior(cfg: ToyTrainConfig, out_dir: Path, work_dir: Path | None = None, progress: bool = True) -> dict:
    """Train the pixel toy prior and save it (EMA weights) to ``out_dir``. Returns training statistics."""
    t_start, c_start = time.perf_counter(), time.process_time()
    work_dir = Path(work_dir) if work_dir is not None else None
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    bank = cached_view_bank(cfg, cfg.architecture.resolution, work_dir, progress)
    t_bank = time.perf_counter() - t_start

    torch.manual_seed(cfg.seed)
    prior = ToyPrior.build(cfg.architecture)
    stats = train_denoiser(
        prior.unet, prior.text_encoder, prior.tokenize, prior.scheduler, cfg, pixel_batches(bank, cfg, cfg),
        cfg.seed, work_dir / "train_checkpoint.pt" if work_dir else None, "train toy prior", progress,
    )
    prior.eval()
    stats.update({
        "seconds_bank": round(t_bank, 1), "seconds_total": round(time.perf_counter() - t_start, 1),
        "cpu_seconds_this_run": round(time.process_time() - c_start, 1), "held_out": list(cfg.held_out),
        "unet_parameters": sum(p.numel() for p in prior.unet.parameters()),
    })
    prior.save(out_dir, info={"training": cfg.model_dump(mode="json", exclude={"architecture"}), "stats": stats})
    return stats
