"""Training data for the toy prior: rendered views of random toy objects with DreamFusion-style captions."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from distill3d.cameras import CameraDistribution, sample_cameras
from distill3d.toyworld.render import render_gt_batch
from distill3d.toyworld.vocab import ObjectSpec, all_specs


@dataclass
class ViewBank:
    """N pre-rendered views: images (N, 3, S, S) uint8, the spec index per view and the DreamFusion view phrase."""

    images: torch.Tensor
    spec_index: torch.Tensor
    views: list[str]
    specs: list[ObjectSpec]

    def __len__(self) -> int:
        return self.images.shape[0]

    def captions(self, idx: torch.Tensor, rng: random.Random, view_phrase_probability: float,
                 drop_probability: float) -> list[str]:
        """Captions for views ``idx``: empty with ``drop_probability`` (for classifier-free guidance), with the
        view phrase with ``view_phrase_probability``."""
        out = []
        for i in idx.tolist():
            r = rng.random()
            if r < drop_probability:
                out.append("")
                continue
            view = self.views[i] if rng.random() < view_phrase_probability else None
            out.append(self.specs[int(self.spec_index[i])].caption(view))
        return out


def render_view_bank(
    n_views: int, size: int, held_out: set[ObjectSpec], seed: int = 0, ssaa: int = 2,
    cameras: CameraDistribution = CameraDistribution(), chunk: int = 256, progress: bool = True,
) -> ViewBank:
    """Render ``n_views`` random (object, camera) pairs, objects drawn uniformly from every spec not held out."""
    specs = [s for s in all_specs() if s not in held_out]
    gen = torch.Generator().manual_seed(seed)
    spec_index = torch.randint(len(specs), (n_views,), generator=gen)
    images = torch.empty(n_views, 3, size, size, dtype=torch.uint8)
    views: list[str] = []
    for start in tqdm(range(0, n_views, chunk), desc="render toy views", disable=not progress):
        idx = spec_index[start:start + chunk]
        cams = sample_cameras(len(idx), cameras, generator=gen)
        out = render_gt_batch([specs[int(i)] for i in idx], cams, size, ssaa=ssaa)
        images[start:start + len(idx)] = (out["rgb"].permute(0, 3, 1, 2) * 255).round().to(torch.uint8)
        views += cams.view_phrases()
    return ViewBank(images, spec_index, views, specs)
