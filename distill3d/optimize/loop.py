"""The score-distillation loop shared by methods (DreamFusion Sec. 3): cameras -> render -> guidance -> regularisers
-> Adam step, with atomic checkpoints for resume and a progress bar.

What is rendered is a part: any list of scenes (distill3d/optimize/scene.py: a volume-rendered field, a rasterised
DMTet mesh, ...), optimised together; several scenes are particles (ProlificDreamer) that share one guidance call
per step, so a guidance with state of its own (VSD's LoRA) sees every particle's renders. The guidance is any
``guidance.sds.Guidance`` callable (SDS by default) and is told the cameras of the views it scores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from distill3d.cameras import Cameras, sample_cameras, sample_multiview_cameras
from distill3d.guidance.prompts import ViewPrompts
from distill3d.guidance.sds import Guidance, SDSConfig, SDSGuidance
from distill3d.optimize.config import DistillConfig
from distill3d.optimize.heap import keep_freed_memory
from distill3d.optimize.losses import weighted_total
from distill3d.optimize.scene import Scene
from distill3d.priors.base import Prior
from distill3d.shading import random_light_directions

CHECKPOINT_NAME = "checkpoint.pt"
SHADING_MODES = ("albedo", "lambertian", "textureless", "normal")


def make_optimizer(scenes: Sequence[nn.Module], cfg: DistillConfig) -> torch.optim.Adam:
    """Adam over every scene's parameter groups, each at ``cfg.lr_for(group)`` (hash tables 10x the MLP's)."""
    params = []
    for scene in scenes:
        for name, group in scene.param_groups().items():
            if group:
                params.append({"params": group, "lr": cfg.lr_for(name), "name": name})
    return torch.optim.Adam(params, betas=tuple(cfg.betas), eps=cfg.eps, foreach=False, fused=True)


def choose_shading(step: int, cfg: DistillConfig, generator: torch.Generator) -> str:
    """Albedo for the first ``albedo_only_fraction`` of the steps, then a draw from ``shading_probs``."""
    if step < cfg.albedo_only_fraction * cfg.steps:
        return "albedo"
    names = [m for m in SHADING_MODES if cfg.shading_probs.get(m, 0.0) > 0]
    p = torch.tensor([cfg.shading_probs[m] for m in names], dtype=torch.float64)
    return names[int(torch.multinomial(p, 1, generator=generator))]


def sample_views(cfg: DistillConfig, prior: Prior, generator: torch.Generator, device: torch.device) -> Cameras:
    """The cameras of one scene's step: ``views_per_step`` random ones, or for ``camera_sampler="orbit"`` groups of
    the prior's ``views_per_sample`` cameras as MVDream samples them (consecutive, group-major)."""
    if cfg.camera_sampler == "orbit":
        k = prior.views_per_sample
        if cfg.views_per_step % k:
            raise ValueError(f"camera_sampler 'orbit' needs views_per_step a multiple of the prior's {k} views")
        return sample_multiview_cameras(cfg.views_per_step // k, k, cfg.camera, generator=generator, device=device)
    return sample_cameras(cfg.views_per_step, cfg.camera, generator=generator, device=device)


def backgrounds(cfg: DistillConfig, n: int, group: int, generator: torch.Generator,
                device: torch.device) -> torch.Tensor:
    """(n, 3) background colours of a step's n views: the fixed colour, or random solid colours, one per ``group``
    consecutive views (white with probability ``background_white_probability``)."""
    if cfg.background != "random":
        return torch.tensor(cfg.background, dtype=torch.float32, device=device).expand(n, 3)
    groups = n // group
    colour = torch.rand(groups, 3, generator=generator)
    white = torch.rand(groups, generator=generator) < cfg.background_white_probability
    colour = torch.where(white[:, None], torch.ones_like(colour), colour)
    return colour.repeat_interleave(group, dim=0).to(device)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous. The guidance's gradient w.r.t. the (B, 3, H,
    W) images reaches the renders' (B, H, W, 3) as a transposed view, and the renderer's backward gathers it by ray
    (nerfacc's accumulate_along_rays: an index_select along rays): on a transposed (R, 3) that took 1.85 ms per
    step against 0.03 contiguous (the same values, hence the same gradients bit for bit)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _contiguous_grad(x: torch.Tensor) -> torch.Tensor:
    return _ContiguousGrad.apply(x)


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _sum_terms(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    total: dict[str, torch.Tensor] = {}
    for part in parts:
        for k, v in part.items():
            total[k] = v if k not in total else total[k] + v
    return total


def distill(
    scenes: Sequence[Scene],
    prior: Prior,
    prompt: str,
    cfg: DistillConfig,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    work_dir: Path | None = None,
    progress: bool = True,
    guidance: SDSConfig | Guidance | None = None,
    callback: Callable[[int, dict], None] | None = None,
) -> dict:
    """Optimise ``scenes`` in place so their renders score well under ``prior`` for ``prompt``.

    Each step: every scene's ``step_begin``; ``views_per_step`` cameras per scene; one shading mode (and random
    light per view); render at ``render_size`` (default prior.resolution); one guidance call on all the scenes'
    renders (its ``loss_*`` terms scaled by the number of scenes, so each scene gets the gradient it would get
    alone); each scene's own ``loss_*`` terms summed over scenes; terms weighted by ``cfg.lambdas()`` (terms with
    weight 0 dropped); backward; Adam step.

    Resume: with ``work_dir``, every ``checkpoint_every`` steps (and at the end) ``work_dir/checkpoint.pt`` is
    written atomically (scenes, optimiser, RNG states, guidance state, history, step); a later call loads it and
    runs the remaining steps, so the total over runs is ``cfg.steps``.

    ``callback(step, info)`` runs after each step (info: losses and shading of the step).

    Returns the history: ``losses`` {name: [float per step]}, ``loss_total``, ``t``, ``grad_norm``, ``shading``,
    ``seconds`` {render, prior, backward, other, total} (summed over all runs), ``start_step`` (where this call
    began), ``steps_run`` (steps this call ran), ``steps`` (steps done in total).
    """
    device = torch.device(device)
    keep_freed_memory()  # the step's tensors reuse freed heap memory instead of fresh pages (optimize/heap.py)
    scenes = list(scenes)
    for scene in scenes:
        scene.to(device).train()
    guide: Guidance = SDSGuidance(guidance if isinstance(guidance, SDSConfig) else None) \
        if guidance is None or isinstance(guidance, SDSConfig) else guidance
    prompts = ViewPrompts(prior, prompt, view_dependent=cfg.view_dependent_prompts)
    size = cfg.render_size or prior.resolution
    opt = make_optimizer(scenes, cfg)
    params = [p for group in opt.param_groups for p in group["params"]]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    lambdas = cfg.lambdas()
    n = len(scenes)
    group = prior.views_per_sample if cfg.camera_sampler == "orbit" else 1
    history: dict = {"losses": {}, "loss_total": [], "t": [], "grad_norm": [], "shading": [],
                     "seconds": {"render": 0.0, "prior": 0.0, "backward": 0.0, "other": 0.0, "total": 0.0}}

    start = 0
    ckpt_path = Path(work_dir) / CHECKPOINT_NAME if work_dir is not None else None
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        if ckpt_path.exists():
            ck = torch.load(ckpt_path, map_location=device, weights_only=False)
            for scene, state in zip(scenes, ck["scenes"], strict=True):
                scene.load_state_dict(state)
            opt.load_state_dict(ck["optimizer"])
            gen.set_state(ck["generator"])
            torch.set_rng_state(ck["torch_rng"])
            if torch.cuda.is_available() and ck.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(ck["cuda_rng"])
            if ck.get("guidance") is not None and hasattr(guide, "load_state_dict"):
                guide.load_state_dict(ck["guidance"])
            history = ck["history"]
            start = int(ck["step"])

    def checkpoint(step_done: int) -> None:
        _save_atomic({
            "step": step_done, "scenes": [s.state_dict() for s in scenes], "optimizer": opt.state_dict(),
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "guidance": guide.state_dict() if hasattr(guide, "state_dict") else None,
            "history": history, "config": cfg.model_dump(mode="json"),
        }, ckpt_path)

    secs = history["seconds"]
    t_begin = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc=f"distill {prompt!r}", leave=False)
    try:
        for step in range(start, cfg.steps):
            progress_frac = step / max(cfg.steps - 1, 1)
            t0 = time.perf_counter()
            for scene in scenes:
                scene.step_begin(step, generator=gen)
            views = [sample_views(cfg, prior, gen, device) for _ in scenes]
            mode = choose_shading(step, cfg, gen)
            lights = [None if mode == "albedo" else random_light_directions(c, cfg.light_spread_deg, generator=gen)
                      for c in views]
            bgs = [backgrounds(cfg, len(c), group, gen, device) for c in views]
            t1 = time.perf_counter()
            outs = [scene.render(c, size, shading=mode, light_dir=light, background=bg, ambient=cfg.ambient,
                                 generator=gen)
                    for scene, c, light, bg in zip(scenes, views, lights, bgs)]
            # NCHW in memory: a permuted (B, H, W, 3) view made x_t channels-last, and the toy prior's convolutions
            # ran 1.7 % slower on it (interleaved timing, 200 calls each)
            images = _contiguous_grad(torch.cat([o["rgb"] for o in outs])).permute(0, 3, 1, 2).contiguous()
            cams = views[0] if n == 1 else cat_cameras(views)
            t2 = time.perf_counter()
            text = prompts.for_cameras(cams, textureless=mode in ("textureless", "normal"))  # no albedo shown
            g = guide(prior, images, text, progress_frac, generator=gen, cameras=cams)
            t3 = time.perf_counter()
            losses = {k: v * n if n > 1 else v for k, v in g.items() if k.startswith("loss_")}
            losses.update(_sum_terms([scene.losses(o, gen) for scene, o in zip(scenes, outs)]))
            losses = {k: v for k, v in losses.items() if lambdas.get(k, 1.0) != 0}
            total = weighted_total(losses, lambdas)
            for p in params:  # opt.zero_grad(set_to_none=True) without its profiler scope: ~0.2 ms a step here
                p.grad = None
            total.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_([p for s in scenes for p in s.parameters()], cfg.max_grad_norm)
            opt.step()
            t4 = time.perf_counter()
            secs["other"] += t1 - t0
            secs["render"] += t2 - t1
            secs["prior"] += t3 - t2
            secs["backward"] += t4 - t3

            vals = {k: float(v.detach()) for k, v in losses.items()}
            for k, v in vals.items():
                history["losses"].setdefault(k, []).append(v)
            history["loss_total"].append(float(total.detach()))
            history["t"].append([int(x) for x in g["t"]] if "t" in g else None)
            history["grad_norm"].append(float(g.get("grad_norm", float("nan"))))
            history["shading"].append(mode)
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{float(total.detach()):.4g}", shading=mode)
            if ckpt_path is not None and (step + 1) % cfg.checkpoint_every == 0:
                secs["total"] += time.perf_counter() - t_begin
                t_begin = time.perf_counter()
                checkpoint(step + 1)
            if callback is not None:
                callback(step, {"losses": vals, "shading": mode})
    finally:
        bar.close()
    secs["total"] += time.perf_counter() - t_begin
    if ckpt_path is not None and start < cfg.steps:
        checkpoint(cfg.steps)
    history["start_step"] = start
    history["steps_run"] = cfg.steps - start
    history["steps"] = cfg.steps
    return history


def cat_cameras(parts: Sequence):
    """One ``Cameras`` batch from several (in order)."""
    from distill3d.cameras import Cameras

    return Cameras(*(torch.cat([getattr(c, f) for c in parts]) for f in ("c2w", "fov", "azimuth", "elevation",
                                                                           "radius")))
