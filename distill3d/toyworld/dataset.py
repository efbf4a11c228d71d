"""Training data for the toy priors: rendered views of random toy objects with DreamFusion-style captions.

A ``ViewBank`` stores each view as the object alone -- colour premultiplied by coverage, plus the coverage
(alpha) -- so a training batch composites it over a *random solid background colour* drawn afresh, independently
of the caption (``random_backgrounds``). Every object, white ones included, is then separable from its background
only by being the object, as in score distillation, where fields are rendered against random background colours.

Captions are balanced by construction: objects are drawn uniformly from the grammar's specs (half striped, half with
a face); a face is on the object's front, so ``face_front_probability`` of the views of face objects are drawn from
DreamFusion's front cone to show it more often, while the caption's view phrase always says where the camera
really is ("..., back view" images never show the face).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from distill3d.cameras import CameraDistribution, Cameras, sample_cameras
from distill3d.toyworld.render import render_gt_batch
from distill3d.toyworld.vocab import ObjectSpec, all_specs, parse_prompt

FRONT_HALF_ANGLE = 45.0  # DreamFusion's front cone (cameras.view_phrase)


def random_backgrounds(n: int, generator: torch.Generator | None = None, white_probability: float = 0.0) -> torch.Tensor:
    """(n, 3) solid background colours: uniform in the RGB cube, pure white with ``white_probability`` (the
    background distillation renders use by default). Drawn from ``generator`` only, never from captions."""
    colours = torch.rand(n, 3, generator=generator)
    white = torch.rand(n, generator=generator) < white_probability
    return torch.where(white[:, None], torch.ones_like(colours), colours)


def composite(premultiplied: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Over-composite: (B, 3, H, W) premultiplied colour and (B, 1, H, W) coverage in [0, 1] over (B, 3) solid
    colours -> (B, 3, H, W) images in [0, 1]."""
    return premultiplied + background[:, :, None, None] * (1.0 - alpha)


@dataclass
class ViewBank:
    """N pre-rendered views of objects without background.

    colour (N, 3, S, S) uint8: shaded colour premultiplied by coverage (i.e. rendered over black);
    alpha (N, 1, S, S) uint8: coverage (supersampled, so fractional at silhouettes);
    spec_index (N,) into ``specs``; views: DreamFusion's view phrase of each view's camera.
    """

    colour: torch.Tensor
    alpha: torch.Tensor
    spec_index: torch.Tensor
    views: list[str]
    specs: list[ObjectSpec]

    def __len__(self) -> int:
        return self.colour.shape[0]

    @property
    def size(self) -> int:
        return self.colour.shape[-1]

    def images(self, idx: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        """Views ``idx`` composited over ``background`` (len(idx), 3) colours -> (B, 3, S, S) float in [0, 1]."""
        return composite(self.colour[idx].float() / 255.0, self.alpha[idx].float() / 255.0, background)

    def captions(self, idx: torch.Tensor, rng: random.Random, view_phrase_probability: float,
                 drop_probability: float) -> list[str]:
        """Captions for views ``idx``: empty with ``drop_probability`` (for classifier-free guidance), else the
        object's caption, with its view phrase with ``view_phrase_probability``."""
        out = []
        for i in idx.tolist():
            if rng.random() < drop_probability:
                out.append("")
                continue
            view = self.views[i] if rng.random() < view_phrase_probability else None
            out.append(self.specs[int(self.spec_index[i])].caption(view))
        return out

    # -- persistence (a training run caches its bank in its work dir) -----------------------------------------
    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp")
        torch.save({"colour": self.colour, "alpha": self.alpha, "spec_index": self.spec_index, "views": self.views,
                    "specs": [s.caption() for s in self.specs]}, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "ViewBank":
        d = torch.load(path, weights_only=False)
        return cls(d["colour"], d["alpha"], d["spec_index"], d["views"], [parse_prompt(c) for c in d["specs"]])


def _front_cameras(n: int, dist: CameraDistribution, generator: torch.Generator) -> Cameras:
    front = replace(dist, azimuth=(-FRONT_HALF_ANGLE, FRONT_HALF_ANGLE), overhead_probability=0.0)
    return sample_cameras(n, front, generator=generator)


def _merge(a: Cameras, b: Cameras, take_b: torch.Tensor) -> Cameras:
    pick = lambda x, y: torch.where(take_b.view(-1, *([1] * (x.dim() - 1))), y, x)  # noqa: E731
    return Cameras(*(pick(getattr(a, f), getattr(b, f)) for f in ("c2w", "fov", "azimuth", "elevation", "radius")))


def render_view_bank(
    n_views: int, size: int, held_out: set[ObjectSpec], seed: int = 0, ssaa: int = 2,
    cameras: CameraDistribution = CameraDistribution(), face_front_probability: float = 0.0, chunk: int = 256,
    progress: bool = True,
) -> ViewBank:
    """Render ``n_views`` random (object, camera) pairs without background, objects drawn uniformly from every spec
    not held out, cameras from ``cameras`` (for objects with a face, from its front cone with
    ``face_front_probability``). Deterministic for a seed."""
    specs = [s for s in all_specs() if s not in held_out]
    gen = torch.Generator().manual_seed(seed)
    spec_index = torch.randint(len(specs), (n_views,), generator=gen)
    colour = torch.empty(n_views, 3, size, size, dtype=torch.uint8)
    alpha = torch.empty(n_views, 1, size, size, dtype=torch.uint8)
    views: list[str] = []
    for start in tqdm(range(0, n_views, chunk), desc=f"render toy views {size}px", disable=not progress):
        idx = spec_index[start:start + chunk]
        chunk_specs = [specs[int(i)] for i in idx]
        cams = sample_cameras(len(idx), cameras, generator=gen)
        faces = torch.tensor([s.face for s in chunk_specs])
        to_front = faces & (torch.rand(len(idx), generator=gen) < face_front_probability)
        cams = _merge(cams, _front_cameras(len(idx), cameras, gen), to_front)
        out = render_gt_batch(chunk_specs, cams, size, ssaa=ssaa, background=0.0)
        colour[start:start + len(idx)] = (out["rgb"].permute(0, 3, 1, 2) * 255).round().to(torch.uint8)
        alpha[start:start + len(idx)] = (out["mask"][:, None] * 255).round().to(torch.uint8)
        views += cams.view_phrases()
    return ViewBank(colour, alpha, spec_index, views, specs)
