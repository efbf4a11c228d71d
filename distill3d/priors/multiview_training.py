"""Training of the multi-view toy prior (MVDream, Shi et al. 2023, sec. 3.2) on groups of toy-world renders.

Data (``render_group_bank``): each group is one random toy object (every spec not held out, faces included) seen by
4 cameras as MVDream renders its training data and samples its SDS cameras (``distill3d.cameras.
sample_multiview_cameras``): azimuths 90 degrees apart from one random offset, one shared elevation, distance and field
of view. Renders are stored on white with their coverage, and composited at batch time over one random solid
background per group (white with ``background_white_probability``, else a uniform random RGB colour), so each epoch
sees new backgrounds. Captions have no view phrase (the cameras tell the view); ``caption_drop_probability`` of the
groups get the empty caption (classifier-free guidance). A group can be mirrored left-right (``flip_probability``,
off by default): every toy object is symmetric under x -> -x, so the mirrored silhouettes are the object's seen from
azimuths -a (reordered so the azimuths increase again), but the headlight's side flips with them.

Objective: the toy prior's (v-prediction on a cosine schedule, Min-SNR-gamma weights, per-pixel detail weights, EMA
of the weights, AdamW with a cosine learning rate), with **one t per group** (MVDream denoises the views of a sample at
the same noise level).
Resumable: the rendered bank and a checkpoint (weights, optimiser, EMA, RNG states, losses) live in ``work_dir``.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from distill3d.cameras import CameraDistribution, Cameras, sample_multiview_cameras, spherical_cameras
from distill3d.priors.multiview import MultiViewArchitecture, MultiViewToyPrior, mvdream_camera
from distill3d.priors.toy_training import detail_weights
from distill3d.toyworld.render import render_gt_batch
from distill3d.toyworld.vocab import ObjectSpec, all_specs, parse_prompt

# Held out of training (whole specs): face captions for the Janus check, plain ones for shape/colour, and the
# comparison's face and striped prompts (held out of the pixel prior too, so every method meets them unseen).
MV_HELD_OUT = (
    "a yellow sphere with a face", "a blue cube with a face", "a red cylinder with a face",
    "a green cone", "a purple cube", "an orange striped torus",
    "an orange sphere with a face", "a blue striped cylinder",
)


class MultiViewTrainConfig(BaseModel):
    """Training recipe of the multi-view toy prior (the `train_mv_prior` section of params.yaml)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(5500, ge=1)
    groups_per_batch: int = Field(8, ge=1)  # x 4 views = 32 images per step
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(200, ge=0)
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    min_snr_gamma: float = Field(5.0, gt=0)
    # The pixel prior's per-pixel loss weights (toy_training.detail_weights): more of the gradient on the few pixels
    # of face features, stripes and edges; the minimiser is unchanged. 0 = plain MSE (v1).
    detail_loss_weight: float = Field(1.0, ge=0)
    caption_drop_probability: float = Field(0.1, ge=0.0, le=1.0)
    background_white_probability: float = Field(0.1, ge=0.0, le=1.0)  # v1: 0.5 (a white object is lost on white)
    # Off by default: the toy renderer's headlight sits up and to the camera's left, so a mirrored render is lit from
    # the right (mean |difference| to a direct render from -a: 2 % of the range, up to 28 % on the shading).
    flip_probability: float = Field(0.0, ge=0.0, le=1.0)
    bank_groups: int = Field(6000, ge=1)
    bank_ssaa: int = Field(2, ge=1)
    seed: int = 0
    checkpoint_every: int = Field(250, ge=1)
    held_out: tuple[str, ...] = MV_HELD_OUT
    architecture: MultiViewArchitecture = Field(default_factory=MultiViewArchitecture)


@dataclass
class GroupBank:
    """G groups of V views rendered on white: images (G, V, 3, S, S) uint8, coverage masks (G, V, S, S) uint8,
    the cameras' azimuth / elevation / radius / fov (G, V) float32, and the spec of each group."""

    images: torch.Tensor
    masks: torch.Tensor
    azimuth: torch.Tensor
    elevation: torch.Tensor
    radius: torch.Tensor
    fov: torch.Tensor
    spec_index: torch.Tensor
    specs: list[ObjectSpec]

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def views(self) -> int:
        return self.images.shape[1]

    def state_dict(self) -> dict:
        return {"images": self.images, "masks": self.masks, "azimuth": self.azimuth, "elevation": self.elevation,
                "radius": self.radius, "fov": self.fov, "spec_index": self.spec_index,
                "specs": [(s.shape, s.colour, s.pattern, s.face) for s in self.specs]}

    @classmethod
    def from_state_dict(cls, state: dict) -> "GroupBank":
        return cls(**{k: v for k, v in state.items() if k != "specs"}, specs=[ObjectSpec(*s) for s in state["specs"]])

    def batch(self, idx: torch.Tensor, generator: torch.Generator, flip_probability: float = 0.0,
              white_probability: float = 1.0) -> tuple[torch.Tensor, Cameras]:
        """Groups ``idx`` (n,) -> images x0 (n V, 3, S, S) in [-1, 1] over their random backgrounds, and their n V
        cameras, group-major. Mirrored groups (``flip_probability``) get azimuths -a, views reordered [0, V-1, ..., 1]
        so the azimuths increase as in unmirrored groups."""
        n, v = idx.shape[0], self.views
        rgb = self.images[idx].float() / 255.0  # (n, V, 3, S, S) on white
        cover = self.masks[idx].float()[:, :, None] / 255.0
        white = torch.rand(n, generator=generator) < white_probability
        bg = torch.where(white[:, None], torch.ones(n, 3), torch.rand(n, 3, generator=generator))
        rgb = rgb + (1.0 - cover) * (bg[:, None, :, None, None] - 1.0)  # exact: renders are linear in the background
        az, el, r, fov = (getattr(self, f)[idx] for f in ("azimuth", "elevation", "radius", "fov"))
        flip = torch.rand(n, generator=generator) < flip_probability
        if flip.any():
            order = [0] + list(range(v - 1, 0, -1))
            rgb = torch.where(flip[:, None, None, None, None], rgb.flip(-1)[:, order], rgb)
            az = torch.where(flip[:, None], -az[:, order], az)
        cams = spherical_cameras(az.reshape(-1), el.reshape(-1), r.reshape(-1), fov.reshape(-1))
        return rgb.reshape(n * v, *rgb.shape[2:]) * 2.0 - 1.0, cams

    def captions(self, idx: torch.Tensor, rng: random.Random, drop_probability: float) -> list[str]:
        """One caption per view (V per group, the group's caption repeated; "" for a dropped group)."""
        out = []
        for i in idx.tolist():
            caption = "" if rng.random() < drop_probability else self.specs[int(self.spec_index[i])].caption()
            out += [caption] * self.views
        return out


def render_group_bank(
    n_groups: int, size: int, held_out: set[ObjectSpec], n_views: int = 4, seed: int = 0, ssaa: int = 2,
    cameras: CameraDistribution = CameraDistribution(), chunk: int = 64, progress: bool = True,
) -> GroupBank:
    """Render ``n_groups`` groups of ``n_views`` views of random objects (uniform over every spec not held out)
    from ``sample_multiview_cameras`` groups."""
    specs = [s for s in all_specs() if s not in held_out]
    gen = torch.Generator().manual_seed(seed)
    spec_index = torch.randint(len(specs), (n_groups,), generator=gen)
    images = torch.empty(n_groups, n_views, 3, size, size, dtype=torch.uint8)
    masks = torch.empty(n_groups, n_views, size, size, dtype=torch.uint8)
    angles = {f: torch.empty(n_groups, n_views) for f in ("azimuth", "elevation", "radius", "fov")}
    for start in tqdm(range(0, n_groups, chunk), desc="render toy view groups", disable=not progress):
        idx = spec_index[start:start + chunk]
        cams = sample_multiview_cameras(len(idx), n_views, cameras, generator=gen)
        out = render_gt_batch([specs[int(i)] for i in idx for _ in range(n_views)], cams, size, ssaa=ssaa)
        sl = slice(start, start + len(idx))
        rgb = (out["rgb"].permute(0, 3, 1, 2) * 255).round().to(torch.uint8)
        images[sl] = rgb.view(len(idx), n_views, 3, size, size)
        masks[sl] = (out["mask"] * 255).round().to(torch.uint8).view(len(idx), n_views, size, size)
        for f, a in angles.items():
            a[sl] = getattr(cams, f).view(len(idx), n_views)
    return GroupBank(images, masks, **angles, spec_index=spec_index, specs=specs)


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def multiview_loss(prior: MultiViewToyPrior, x0: torch.Tensor, cams: Cameras, text: torch.Tensor,
                   generator: torch.Generator, min_snr_gamma: float, detail_loss_weight: float = 0.0) -> torch.Tensor:
    """The denoising loss of one batch: x0 (n V, 3, S, S) in [-1, 1], one t per group of V views, independent noise
    per view; Min-SNR-gamma-weighted MSE on the scheduler's target (v or epsilon), each pixel weighted by
    ``detail_weights(x0, detail_loss_weight)`` when that is > 0, averaged over images."""
    sched, v = prior.scheduler, prior.views_per_sample
    n = x0.shape[0] // v
    t = torch.randint(sched.config.num_train_timesteps, (n,), generator=generator).repeat_interleave(v)
    noise = torch.randn(x0.shape, generator=generator)
    x_t = sched.add_noise(x0, noise, t)
    v_pred = sched.config.prediction_type == "v_prediction"
    target = sched.get_velocity(x0, noise, t) if v_pred else noise
    pred = prior.unet(x_t, t, encoder_hidden_states=text, class_labels=mvdream_camera(cams)).sample
    alphas = sched.alphas_cumprod.float()
    snr = alphas[t] / (1 - alphas[t])
    weight = snr.clamp_max(min_snr_gamma) / (snr + 1 if v_pred else snr)
    err = F.mse_loss(pred, target, reduction="none")
    if detail_loss_weight > 0:
        err = err * detail_weights(x0, detail_loss_weight)
    return (weight * err.mean(dim=(1, 2, 3))).mean()


def train_multiview_prior(cfg: MultiViewTrainConfig, out_dir: Path, work_dir: Path | None = None,
                          progress: bool = True) -> dict:
    """Train a multi-view toy prior and save it (EMA weights) to ``out_dir``; returns training statistics.

    With ``work_dir``, the bank is cached there and a checkpoint is written every ``checkpoint_every`` steps; a run
    killed at any point continues from the last checkpoint when called again with the same ``work_dir``.
    """
    t_start = time.time()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    arch = cfg.architecture
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
    bank_file = work_dir / "group_bank.pt" if work_dir else None
    if bank_file is not None and bank_file.exists():
        bank = GroupBank.from_state_dict(torch.load(bank_file, weights_only=False))
    else:
        bank = render_group_bank(cfg.bank_groups, arch.resolution, {parse_prompt(c) for c in cfg.held_out},
                                 arch.num_views, seed=cfg.seed, ssaa=cfg.bank_ssaa, progress=progress)
        if bank_file is not None:
            _save(bank_file, bank.state_dict())
    t_bank = time.time() - t_start

    prior = MultiViewToyPrior.build(arch)
    unet, text_encoder = prior.unet, prior.text_encoder
    unet.train()
    text_encoder.train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    lr_sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps)
    ema = EMAModel(params, decay=cfg.ema_decay, use_ema_warmup=True)
    gen = torch.Generator().manual_seed(cfg.seed + 1)

    step, losses, seconds_before, cpu_before = 0, [], 0.0, 0.0
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
        step, losses, seconds_before = state["step"], state["losses"], state.get("seconds_train", 0.0)
        cpu_before = state.get("cpu_seconds_train", 0.0)
    t_train, cpu_train = time.time(), time.process_time()

    bar = tqdm(total=cfg.steps, initial=step, desc="train multi-view toy prior", disable=not progress)
    while step < cfg.steps:
        idx = torch.randint(len(bank), (cfg.groups_per_batch,), generator=gen)
        x0, cams = bank.batch(idx, gen, cfg.flip_probability, cfg.background_white_probability)
        text = text_encoder(prior.tokenize(bank.captions(idx, rng, cfg.caption_drop_probability))).last_hidden_state
        loss = multiview_loss(prior, x0, cams, text, gen, cfg.min_snr_gamma, cfg.detail_loss_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_sched.step()
        ema.step(params)
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.4f}")
        if ckpt is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            _save(ckpt, {
                "unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "opt": opt.state_dict(),
                "lr_sched": lr_sched.state_dict(), "ema": ema.state_dict(), "gen": gen.get_state(),
                "rng": rng.getstate(), "step": step, "losses": losses,
                "seconds_train": seconds_before + time.time() - t_train,
                "cpu_seconds_train": cpu_before + time.process_time() - cpu_train,
            })
    bar.close()
    ema.copy_to(params)
    prior.eval()
    seconds_train = seconds_before + time.time() - t_train
    cpu_seconds = cpu_before + time.process_time() - cpu_train
    stats = {
        "steps": step, "final_loss": sum(losses[-200:]) / max(1, len(losses[-200:])),
        "loss_curve": [sum(losses[i:i + 100]) / len(losses[i:i + 100]) for i in range(0, len(losses), 100)],
        "seconds_bank": round(t_bank, 1), "seconds_train": round(seconds_train, 1),
        "seconds_per_step": round(seconds_train / max(1, step), 3),
        # CPU time of this process (one thread): the wall time per step on an otherwise idle core.
        "cpu_seconds_per_step": round(cpu_seconds / max(1, step), 3), "held_out": list(cfg.held_out),
    }
    prior.save(out_dir, info={"training": cfg.model_dump(mode="json", exclude={"architecture"}), "stats": stats})
    return stats
