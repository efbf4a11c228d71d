"""Training of the toy prior on rendered toy-world views (denoising diffusion, Ho et al. 2020).

v-prediction on a cosine schedule (Salimans & Ho 2022) with Min-SNR-gamma loss weighting (Hang et al. 2023),
an EMA of the weights (the EMA is what is saved), ~10% empty captions for classifier-free guidance and DreamFusion's
view phrases on most captions. Resumable: a checkpoint is written to ``work_dir`` every ``checkpoint_every`` steps.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from distill3d.priors.toy import ToyPrior, ToyPriorArchitecture
from distill3d.toyworld.dataset import render_view_bank
from distill3d.toyworld.vocab import ObjectSpec, parse_prompt

DEFAULT_HELD_OUT = ("a green cone", "a purple cube", "an orange striped torus", "a yellow sphere with a face")


class ToyTrainConfig(BaseModel):
    """Training recipe of the toy prior (the `train_prior` section of params.yaml)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(4000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = 200
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    caption_drop_probability: float = 0.1
    view_phrase_probability: float = 0.7
    bank_views: int = 16000
    bank_ssaa: int = 2
    seed: int = 0
    checkpoint_every: int = 500
    held_out: tuple[str, ...] = DEFAULT_HELD_OUT
    architecture: ToyPriorArchitecture = Field(default_factory=ToyPriorArchitecture)


def held_out_specs(captions: tuple[str, ...]) -> set[ObjectSpec]:
    return {parse_prompt(c) for c in captions}


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_toy_prior(cfg: ToyTrainConfig, out_dir: Path, work_dir: Path | None = None, progress: bool = True) -> dict:
    """Train a toy prior and save it (EMA weights) to ``out_dir``. Returns training statistics."""
    t_start = time.time()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    held = held_out_specs(cfg.held_out)
    bank = render_view_bank(cfg.bank_views, cfg.architecture.resolution, held, seed=cfg.seed, ssaa=cfg.bank_ssaa,
                            progress=progress)
    t_bank = time.time() - t_start

    prior = ToyPrior.build(cfg.architecture)
    unet, text_encoder, sched = prior.unet, prior.text_encoder, prior.scheduler
    unet.train()
    text_encoder.train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    lr_sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps)
    ema = EMAModel(params, decay=cfg.ema_decay, use_ema_warmup=True)
    alphas = sched.alphas_cumprod.float()
    T = sched.config.num_train_timesteps
    gen = torch.Generator().manual_seed(cfg.seed + 1)

    step, losses = 0, []
    ckpt = work_dir / "train_checkpoint.pt" if work_dir else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        lr_sched.load_state_dict(state["lr_sched"])
        ema.load_state_dict(state["ema"])
        gen.set_state(state["gen"])
        rng.setstate(state["rng"])
        step, losses = state["step"], state["losses"]

    bar = tqdm(total=cfg.steps, initial=step, desc="train toy prior", disable=not progress)
    while step < cfg.steps:
        idx = torch.randint(len(bank), (cfg.batch_size,), generator=gen)
        x0 = bank.images[idx].float() / 127.5 - 1.0
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5  # mirror images: front/side/back are symmetric
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        captions = bank.captions(idx, rng, cfg.view_phrase_probability, cfg.caption_drop_probability)
        text = text_encoder(prior.tokenize(captions)).last_hidden_state
        t = torch.randint(T, (cfg.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = sched.add_noise(x0, noise, t)
        target = sched.get_velocity(x0, noise, t) if sched.config.prediction_type == "v_prediction" else noise
        pred = unet(x_t, t, encoder_hidden_states=text).sample
        snr = alphas[t] / (1 - alphas[t])
        # Min-SNR-gamma weights, expressed for the v (or epsilon) target.
        weight = snr.clamp_max(cfg.min_snr_gamma) / (snr + 1 if sched.config.prediction_type == "v_prediction" else snr)
        loss = (weight * F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_sched.step()
        ema.step(params)
        step += 1
        losses.append(float(loss))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
        if ckpt is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            _save_checkpoint(ckpt, {
                "unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "opt": opt.state_dict(),
                "lr_sched": lr_sched.state_dict(), "ema": ema.state_dict(), "gen": gen.get_state(),
                "rng": rng.getstate(), "step": step, "losses": losses,
            })
    bar.close()
    ema.copy_to(params)
    prior.eval()
    stats = {
        "steps": step, "final_loss": sum(losses[-200:]) / max(1, len(losses[-200:])),
        "loss_curve": [sum(losses[i:i + 100]) / len(losses[i:i + 100]) for i in range(0, len(losses), 100)],
        "seconds_bank": round(t_bank, 1), "seconds_total": round(time.time() - t_start, 1),
        "held_out": list(cfg.held_out),
    }
    prior.save(out_dir, info={"training": cfg.model_dump(mode="json", exclude={"architecture"}), "stats": stats})
    return stats
