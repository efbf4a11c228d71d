"""The score-distillation loop shared by methods (DreamFusion Sec. 3, Algorithm: cameras -> render -> guidance ->
regularisers -> Adam step), with atomic checkpoints for resume and a progress bar.

The field is anything with ``bound``, ``query`` (see fields/nerf.py), ``density`` and optionally ``param_groups()``;
the guidance is any ``guidance.sds.Guidance`` callable (SDS by default, VSD later).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from distill3d.cameras import sample_cameras
from distill3d.guidance.prompts import ViewPrompts
from distill3d.guidance.sds import Guidance, SDSConfig, SDSGuidance
from distill3d.optimize.config import DistillConfig
from distill3d.optimize.losses import opacity_loss, orientation_loss, weighted_total
from distill3d.priors.base import Prior
from distill3d.render.volume import OccupancyCache, render_field
from distill3d.shading import random_light_directions

CHECKPOINT_NAME = "checkpoint.pt"
SHADING_MODES = ("albedo", "lambertian", "textureless")


def make_optimizer(field: nn.Module, cfg: DistillConfig) -> torch.optim.Adam:
    """Adam with the hash tables at ``lr_encoding`` and everything else at ``lr_mlp``."""
    if hasattr(field, "param_groups"):
        groups = field.param_groups()
        lrs = {"encoding": cfg.lr_encoding}
        params = [{"params": p, "lr": lrs.get(name, cfg.lr_mlp), "name": name} for name, p in groups.items() if p]
    else:
        params = [{"params": list(field.parameters()), "lr": cfg.lr_mlp, "name": "all"}]
    return torch.optim.Adam(params, betas=tuple(cfg.betas), eps=cfg.eps)


def choose_shading(step: int, cfg: DistillConfig, generator: torch.Generator) -> str:
    """Albedo for the first ``albedo_only_fraction`` of the steps, then a draw from ``shading_probs``."""
    if step < cfg.albedo_only_fraction * cfg.steps:
        return "albedo"
    names = [m for m in SHADING_MODES if cfg.shading_probs.get(m, 0.0) > 0]
    p = torch.tensor([cfg.shading_probs[m] for m in names], dtype=torch.float64)
    return names[int(torch.multinomial(p, 1, generator=generator))]


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def distill_field(
    field: nn.Module,
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
    regularizers: Callable[[nn.Module, dict, torch.Generator], dict[str, torch.Tensor]] | None = None,
) -> dict:
    """Optimise ``field`` in place so its renders score well under ``prior`` for ``prompt``.

    Each step: sample ``views_per_step`` cameras, pick a shading mode (and random light), render at ``render_size``
    (default prior.resolution), ask the guidance for ``loss_*`` terms, add the regularisers, weight them with
    ``cfg.lambdas()``, backpropagate, Adam step.

    Resume: with ``work_dir``, every ``checkpoint_every`` steps (and at the end) ``work_dir/checkpoint.pt`` is
    written atomically (field, optimiser, RNG states, occupancy grid, guidance state, history, step); a later call
    loads it and runs the remaining steps, so the total over runs is ``cfg.steps``.

    ``callback(step, info)`` runs after each step (info: losses and shading of the step).

    ``regularizers(field, render_out, generator)`` adds field-specific ``loss_*`` terms each step (e.g. the SDF's
    eikonal loss); their weights come from ``cfg.extra_lambdas`` (``{"eikonal": 0.1}`` for ``loss_eikonal``).

    Returns the history: ``losses`` {name: [float per step]}, ``loss_total``, ``t``, ``grad_norm``, ``shading``,
    ``seconds`` {render, prior, backward, other, total} (summed over all runs), ``start_step`` (where this call
    began), ``steps_run`` (steps this call ran), ``steps`` (steps done in total).
    """
    device = torch.device(device)
    field.to(device).train()
    guide: Guidance = SDSGuidance(guidance if isinstance(guidance, SDSConfig) else None) \
        if guidance is None or isinstance(guidance, SDSConfig) else guidance
    prompts = ViewPrompts(prior, prompt, view_dependent=cfg.view_dependent_prompts)
    size = cfg.render_size or prior.resolution
    opt = make_optimizer(field, cfg)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    occ = OccupancyCache(field.bound, cfg.n_samples, update_every=cfg.occupancy_every,
                         threshold=cfg.occupancy_threshold, device=device) if cfg.occupancy else None
    lambdas = cfg.lambdas()
    bg = torch.tensor(cfg.background, dtype=torch.float32, device=device)
    history: dict = {"losses": {}, "loss_total": [], "t": [], "grad_norm": [], "shading": [],
                     "seconds": {"render": 0.0, "prior": 0.0, "backward": 0.0, "other": 0.0, "total": 0.0}}

    start = 0
    ckpt_path = Path(work_dir) / CHECKPOINT_NAME if work_dir is not None else None
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        if ckpt_path.exists():
            ck = torch.load(ckpt_path, map_location=device, weights_only=False)
            field.load_state_dict(ck["field"])
            opt.load_state_dict(ck["optimizer"])
            gen.set_state(ck["generator"])
            torch.set_rng_state(ck["torch_rng"])
            if torch.cuda.is_available() and ck.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(ck["cuda_rng"])
            if occ is not None and ck.get("occupancy") is not None:
                occ.load_state_dict(ck["occupancy"])
            if ck.get("guidance") is not None and hasattr(guide, "load_state_dict"):
                guide.load_state_dict(ck["guidance"])
            history = ck["history"]
            start = int(ck["step"])

    def checkpoint(step_done: int) -> None:
        _save_atomic({
            "step": step_done, "field": field.state_dict(), "optimizer": opt.state_dict(),
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "occupancy": occ.state_dict() if occ is not None else None,
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
            if occ is not None:
                occ.update(field, step, generator=gen)
            cams = sample_cameras(cfg.views_per_step, cfg.camera, generator=gen, device=device)
            mode = choose_shading(step, cfg, gen)
            light = None if mode == "albedo" else random_light_directions(cams, cfg.light_spread_deg, generator=gen)
            t1 = time.perf_counter()
            out = render_field(field, cams, size, n_samples=cfg.n_samples, shading=mode, light_dir=light,
                               ambient=cfg.ambient, background=bg.expand(len(cams), 3), stratified=True,
                               generator=gen, occupancy=occ)
            images = out["rgb"].permute(0, 3, 1, 2)
            t2 = time.perf_counter()
            text = prompts.for_cameras(cams, textureless=mode == "textureless")
            g = guide(prior, images, text, progress_frac, generator=gen, cameras=cams)
            t3 = time.perf_counter()
            losses = {k: v for k, v in g.items() if k.startswith("loss_")}
            if "sample_weights" in out and cfg.lambda_orient > 0:
                losses["loss_orient"] = orientation_loss(out)
            if cfg.lambda_opacity > 0:
                losses["loss_opacity"] = opacity_loss(out["opacity"], cfg.opacity_loss)
            if regularizers is not None:
                losses.update(regularizers(field, out, gen))
            total = weighted_total(losses, lambdas)
            opt.zero_grad(set_to_none=True)
            total.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(field.parameters(), cfg.max_grad_norm)
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
