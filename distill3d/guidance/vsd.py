"""Variational Score Distillation (ProlificDreamer, Wang et al. 2023, Sec. 3-4 and Algorithm 1).

VSD treats the 3D parameters as particles theta^(i) of a distribution mu and follows the Wasserstein gradient flow
of KL(q^mu_t(x | c, y) || p_t(x | y)); with the score of the rendered distribution estimated by a LoRA eps_phi of
the pretrained model (``distill3d.guidance.lora``), the particle update is (eq. 9)

    grad_theta L_VSD = E_{t, eps, c}[ w(t) (eps_pretrain(x_t; y, t) - eps_phi(x_t; y, t, c)) dg(theta, c)/dtheta ],

with eps_pretrain classifier-free guided at ``guidance_scale`` (7.5; eq. 1 of DreamFusion, ``Prior.predict_noise_cfg``
with the LoRA *disabled*) and eps_phi the LoRA model at CFG 1, conditioned on the view's camera c. As in SDS the
U-Net Jacobian is dropped (stop-gradient surrogate, see ``distill3d.guidance.sds``):

    L = 1/2 sum (x_0 - sg[x_0 - g])^2 / B,     g = w(t) (eps_pretrain_cfg - eps_phi),     grad_{x_0} L = g / B.

eps_phi is trained alongside (eq. 8, Algorithm 1): on the *detached* renders x_0 of every particle,
t ~ U{0, ..., T-1}, the prior's own denoising loss in its parameterisation (epsilon, v or x_0), camera dropped
(zeroed) with probability 0.1, AdamW, ``lora_steps`` updates per call, *after* the gradient above is computed.

At initialisation (LoRA B = 0, camera MLP output 0) eps_phi = eps_pretrain(x_t; y, t) unguided, so
g = w(t) (s - 1) (eps_cond - eps_uncond): noise-free, the classifier score alone ("classifier score distillation",
Yu et al. 2023) at scale s - 1, not SDS (SDS subtracts the sampled noise eps instead of eps_cond).

Where eps_phi departs from the prior: the LoRA branch calls ``prior.unet`` directly (raw output converted with
``to_epsilon``), so VSD needs a prior with a diffusers ``UNet2DConditionModel`` in ``.unet`` and a diffusers
scheduler in ``.scheduler`` (``ToyPrior``, ``StableDiffusionPrior``), text-to-image only (no depth channel, no
multi-view cameras).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill3d.cameras import Cameras
from distill3d.guidance.lora import ATTENTION_PROJECTIONS, CameraLoRA, camera_features
from distill3d.guidance.sds import Weighting, resize_to_prior, sds_weight, surrogate_loss
from distill3d.priors.base import Prior, PriorError, TextEmbeddings, to_epsilon


class VSDConfig(BaseModel):
    """VSD hyper-parameters (defaults: ProlificDreamer / threestudio's prolificdreamer config).

    Particle gradient: t ~ U[t_min, t_max(progress)] T where t_max goes linearly from ``t_max`` at progress
    ``anneal_start`` to ``t_max_final`` at ``anneal_end`` (equal: a jump, ProlificDreamer's 0.98 -> 0.5 at 5k of 25k
    steps), ``t_max_final`` None: no annealing. ``weighting`` w(t) as in ``SDSConfig`` ("dreamfusion": 1 - alpha_bar_t).
    ``grad_clip`` clamps each element of g; the nan guard zeroes non-finite g.

    LoRA eps_phi: ``lora_rank`` / ``lora_alpha`` (None: = rank, scale 1) on ``lora_targets``; AdamW (``lora_lr``,
    ``lora_betas``, ``lora_weight_decay``); ``lora_steps`` updates per call; camera dropped with probability
    ``camera_dropout``. ``lora_min_snr_gamma``: None trains with the plain MSE of the prior's target (SD, threestudio);
    a number weights it by Min-SNR-gamma (Hang et al. 2023; the toy priors were trained with gamma 5).
    ``adapter_name``: the peft adapter's name on the prior's UNet. ``init_seed``: the LoRA A matrices and the camera
    MLP's first layer are drawn from it (global RNG untouched), so a run is reproducible whatever ran before.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["vsd"] = "vsd"
    guidance_scale: float = Field(7.5, ge=0.0)
    t_min: float = Field(0.02, ge=0.0, le=1.0)
    t_max: float = Field(0.98, gt=0.0, le=1.0)
    t_max_final: float | None = Field(0.5, gt=0.0, le=1.0)
    anneal_start: float = Field(0.2, ge=0.0, le=1.0)
    anneal_end: float = Field(0.2, ge=0.0, le=1.0)
    weighting: Weighting = "dreamfusion"
    grad_clip: float | None = Field(None, gt=0.0)
    nan_guard: bool = True
    lora_rank: int = Field(4, ge=1)
    lora_alpha: float | None = Field(None, gt=0.0)
    lora_targets: tuple[str, ...] = ATTENTION_PROJECTIONS
    lora_lr: float = Field(1e-4, gt=0.0)
    lora_betas: tuple[float, float] = (0.9, 0.999)
    lora_weight_decay: float = Field(0.0, ge=0.0)
    lora_steps: int = Field(1, ge=0)
    camera_dropout: float = Field(0.1, ge=0.0, le=1.0)
    lora_min_snr_gamma: float | None = Field(None, gt=0.0)
    adapter_name: str = "vsd"
    init_seed: int = 0

    @model_validator(mode="after")
    def _anneal_order(self) -> "VSDConfig":
        if self.anneal_end < self.anneal_start:
            raise ValueError(f"anneal_end ({self.anneal_end}) must be >= anneal_start ({self.anneal_start})")
        return self


def vsd_t_range(cfg: VSDConfig, progress: float) -> tuple[float, float]:
    """Fractions (lo, hi) of T that the particles' t is drawn from at ``progress`` in [0, 1]."""
    hi = cfg.t_max
    if cfg.t_max_final is not None:
        p = min(max(progress, 0.0), 1.0)
        if p >= cfg.anneal_end:
            s = 1.0
        elif p <= cfg.anneal_start:
            s = 0.0
        else:
            s = (p - cfg.anneal_start) / (cfg.anneal_end - cfg.anneal_start)
        hi = cfg.t_max + (cfg.t_max_final - cfg.t_max) * s
    return cfg.t_min, max(hi, cfg.t_min)


def _randint(lo: int, hi: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(lo, hi + 1, (n,), generator=generator)


def vsd_timesteps(cfg: VSDConfig, progress: float, n: int, T: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) integer t uniform in [round(lo T), round(hi T)] (clamped to [0, T - 1]), (lo, hi) = ``vsd_t_range``."""
    lo, hi = vsd_t_range(cfg, progress)
    lo_i = min(max(int(round(lo * T)), 0), T - 1)
    return _randint(lo_i, min(max(int(round(hi * T)), lo_i), T - 1), n, generator)


def check_vsd_prior(prior: Prior) -> None:
    """Raise PriorError unless ``prior`` is a text-to-image prior with a diffusers UNet VSD can attach a LoRA to."""
    from diffusers import UNet2DConditionModel

    if not isinstance(getattr(prior, "unet", None), UNet2DConditionModel) or not hasattr(prior, "scheduler"):
        raise PriorError(f"VSD needs a prior with a diffusers UNet2DConditionModel (.unet) and scheduler "
                         f"(.scheduler), as ToyPrior and StableDiffusionPrior: got {type(prior).__name__}")
    if prior.depth_conditioned or prior.camera_conditioned or prior.views_per_sample != 1:
        raise PriorError(f"VSD's LoRA is for text-to-image priors; {type(prior).__name__} is depth- or "
                         "camera-conditioned (use SDS / multi-view SDS with it)")


def unet_output(prior: Prior, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The raw UNet prediction (in ``prior.scheduler``'s parameterisation) for x_t (B, C, h, w), t (B,), text
    (B, L, D), in fp32; the UNet runs in its own dtype. Whatever adapters / camera are active apply."""
    unet = prior.unet
    out = unet(x_t.to(prior.device, unet.dtype), t.to(prior.device),
               encoder_hidden_states=text.to(prior.device, unet.dtype)).sample
    return out.float()


def denoising_target(prior: Prior, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the prior's UNet was trained to output for x_t = add_noise(x0, noise, t): epsilon, v (Salimans & Ho
    2022: sqrt(a) eps - sqrt(1 - a) x_0, ``scheduler.get_velocity``) or x_0. Shapes (B, C, h, w)."""
    kind = prior.scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return prior.scheduler.get_velocity(x0, noise, t)
    if kind == "sample":
        return x0
    raise PriorError(f"unknown scheduler prediction_type {kind!r}: expected epsilon, v_prediction or sample")


def min_snr_weight(alpha_bar: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """(B,) Min-SNR-gamma weights of the MSE on the prediction target: min(SNR, gamma) / SNR for epsilon,
    / (SNR + 1) for v, / 1 for x_0 (SNR = a / (1 - a))."""
    snr = alpha_bar / (1 - alpha_bar)
    num = snr.clamp_max(gamma)
    if prediction_type == "epsilon":
        return num / snr
    if prediction_type == "v_prediction":
        return num / (snr + 1)
    return num


def lora_loss(prior: Prior, lora: CameraLoRA, x0: torch.Tensor, text: torch.Tensor, cams: torch.Tensor,
              cfg: VSDConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """The LoRA's denoising loss on detached x_0 (B, C, h, w) with text (B, L, D) and camera features (B, 16)
    (ProlificDreamer eq. 8, with the prior's own target): scalar, differentiable w.r.t. ``lora.parameters()``.

    Draws t ~ U{0..T-1} (B,), noise (B, C, h, w) and the camera-dropout mask (B,) from ``generator``, in that order.
    """
    B, dev = x0.shape[0], x0.device
    t = _randint(0, prior.num_train_timesteps - 1, B, generator).to(dev)
    noise = torch.randn(x0.shape, generator=generator).to(device=dev, dtype=x0.dtype)
    keep = (torch.rand(B, generator=generator) >= cfg.camera_dropout).to(dev)
    x_t = prior.add_noise(x0, noise, t)
    with lora.conditioned(cams * keep[:, None].to(cams.dtype)):
        pred = unet_output(prior, x_t, t, text)
    per_image = F.mse_loss(pred, denoising_target(prior, x0, noise, t).float(), reduction="none").mean(dim=(1, 2, 3))
    if cfg.lora_min_snr_gamma is not None:
        a = prior.alphas_cumprod.to(dev)[t]
        per_image = per_image * min_snr_weight(a, cfg.lora_min_snr_gamma, prior.scheduler.config.prediction_type)
    return per_image.mean()


def vsd_loss(prior: Prior, lora: CameraLoRA, images: torch.Tensor, text: TextEmbeddings, cfg: VSDConfig,
             progress: float, generator: torch.Generator | None = None, cameras: Cameras | None = None) -> dict:
    """The particle term of VSD on renders ``images`` (B, 3, H, W) in [0, 1] (all particles' views together), with
    per-image prompt embeddings ``text`` (cond (B, L, D)) and ``cameras`` (B) (None: the dropped-camera input).
    Does not train the LoRA (``VSDGuidance`` does).

    Returns {"loss_vsd": scalar whose gradient w.r.t. x_0 is g / B, g = w(t)(eps_pretrain_cfg - eps_phi) (eq. 9),
    "t": (B,) long, "w": (B,), "grad_norm": float (norm of g over the batch), "x0": (B, C, h, w) detached model-space
    renders, "cams": (B, 16) camera features}. Draws t (B,) then noise (B, C, h, w) from ``generator``.
    """
    B = images.shape[0]
    x0 = prior.encode_images(resize_to_prior(images, prior.resolution))
    dev = x0.device
    t = vsd_timesteps(cfg, progress, B, prior.num_train_timesteps, generator).to(dev)
    noise = torch.randn(x0.shape, generator=generator).to(device=dev, dtype=x0.dtype)
    cams = camera_features(cameras, B, x0.device)
    with torch.no_grad():
        x_t = prior.add_noise(x0.detach(), noise, t)
        eps_pretrain, _, _ = prior.predict_noise_cfg(x_t, t, text, cfg.guidance_scale)  # LoRA disabled
        with lora.conditioned(cams):
            raw = unet_output(prior, x_t, t, text.cond)
        eps_phi = to_epsilon(raw, x_t.float(), prior.alphas_cumprod.to(dev)[t], prior.scheduler.config.prediction_type)
        w = sds_weight(prior.alphas_cumprod.to(dev)[t].to(x0.dtype), cfg.weighting)
        g = w.view(-1, *([1] * (x0.dim() - 1))) * (eps_pretrain.to(x0.dtype) - eps_phi.to(x0.dtype))
    loss, g = surrogate_loss(x0, g, cfg.nan_guard, cfg.grad_clip)
    return {"loss_vsd": loss, "t": t.detach(), "w": w.detach(), "grad_norm": float(g.norm()),
            "x0": x0.detach(), "cams": cams}


class VSDGuidance:
    """VSD as the loop's ``Guidance``: bound to one prior, whose UNet carries its LoRA until ``close()``.

    ``VSDGuidance(prior, cfg)`` attaches the LoRA and camera MLP (``CameraLoRA``) to ``prior.unet``. Each call
    (``guidance(prior, images, text, progress, generator=, cameras=)`` with all particles' renders in one batch)
    computes ``vsd_loss`` with the current LoRA, then trains the LoRA ``cfg.lora_steps`` times on the detached
    renders, and returns {"loss_vsd", "t", "w", "grad_norm", "lora_loss": float (mean over the updates; nan when
    ``lora_steps`` is 0)}. ``lora_loss`` is deliberately not a ``loss_*`` term: it is optimised here, by the LoRA's
    own AdamW, and the loop must not weight or backpropagate it. ``history["lora_loss"]`` keeps one value per call.

    ``state_dict()`` / ``load_state_dict()``: LoRA weights, camera MLP, AdamW state, history and call count (RNG
    comes from the caller's generator), so the loop's checkpoints resume runs exactly. ``close()`` (or leaving a
    ``with VSDGuidance(...)`` block) removes everything from the UNet; until then adapters are disabled outside
    this object's calls, so the prior serves other callers unchanged.
    """

    def __init__(self, prior: Prior, cfg: VSDConfig | None = None):
        check_vsd_prior(prior)
        self.prior, self.cfg = prior, cfg or VSDConfig()
        cuda = [prior.device] if prior.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.cfg.init_seed)
            self.lora = CameraLoRA(prior.unet, self.cfg.lora_rank, self.cfg.lora_alpha, self.cfg.lora_targets,
                                   self.cfg.adapter_name)
        self.optimizer = torch.optim.AdamW(self.lora.parameters(), lr=self.cfg.lora_lr, betas=self.cfg.lora_betas,
                                           weight_decay=self.cfg.lora_weight_decay)
        self.history: dict[str, list[float]] = {"lora_loss": []}
        self.calls = 0

    def __call__(self, prior: Prior, images: torch.Tensor, text: TextEmbeddings, progress: float,
                 generator: torch.Generator | None = None, cameras: Cameras | None = None) -> dict:
        if prior is not self.prior:
            raise ValueError("this VSDGuidance was built for another prior object")
        out = vsd_loss(prior, self.lora, images, text, self.cfg, progress, generator, cameras)
        x0, cams = out.pop("x0"), out.pop("cams")
        out["lora_loss"] = self.train_lora(x0, text.cond.detach(), cams, generator)
        self.calls += 1
        return out

    def train_lora(self, x0: torch.Tensor, text: torch.Tensor, cams: torch.Tensor,
                   generator: torch.Generator | None = None) -> float:
        """``cfg.lora_steps`` AdamW updates of the LoRA on x_0 (B, C, h, w) (detached), text (B, L, D), cameras
        (B, 16); returns the mean loss (nan for 0 steps) and appends it to ``history``."""
        losses = []
        for _ in range(self.cfg.lora_steps):
            loss = lora_loss(self.prior, self.lora, x0.detach(), text, cams, self.cfg, generator)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(float(loss.detach()))
        mean = sum(losses) / len(losses) if losses else float("nan")
        self.history["lora_loss"].append(mean)
        return mean

    def state_dict(self) -> dict:
        return {**self.lora.state_dict(), "optimizer": self.optimizer.state_dict(),
                "history": {k: list(v) for k, v in self.history.items()}, "calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.lora.load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.calls = int(state["calls"])

    def close(self) -> None:
        """Remove the LoRA and camera hook from the prior's UNet (idempotent)."""
        self.lora.close()

    def __enter__(self) -> "VSDGuidance":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
