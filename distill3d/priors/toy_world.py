"""The toy world's language as any prior trained on it reads it: the one place for prompt validation, caption
normalisation and the textureless prompt, shared by the pixel ``ToyPrior`` and by toy-world latent priors saved as
Stable Diffusion folders (``StableDiffusionPrior``). Importing it does not import torch (cheap prompt checks).

A prior folder says it was trained on the toy world in its own metadata, readable without torch (``folder_world``):

* the pixel toy prior: ``prior.json`` with ``"kind": "toy"``;
* a Stable Diffusion folder: ``model_index.json`` with ``"_distill3d": {"world": "toy", ...}`` (a private key:
  diffusers' pipeline loader ignores keys starting with "_", so the folder still loads as a plain pipeline).
"""

from __future__ import annotations

import json
from pathlib import Path

from distill3d.toyworld.vocab import VIEWS, ObjectSpec, PromptError, check_prompt, parse_prompt, tokenize_words

TOY_WORLD = "toy"
MODEL_INDEX_KEY = "_distill3d"  # model_index.json: {"_distill3d": {"world": "toy", ...training metadata}}


def folder_world(path: str | Path) -> str | None:
    """The world a prior folder was trained on ("toy"), or None (e.g. real Stable Diffusion weights, or a folder
    whose metadata is missing or unreadable: the loaders report those)."""
    path = Path(path)
    for name in ("prior.json", "model_index.json"):
        try:
            meta = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict):
            continue
        if name == "prior.json" and meta.get("kind") == TOY_WORLD:
            return TOY_WORLD
        extra = meta.get(MODEL_INDEX_KEY)
        if isinstance(extra, dict) and extra.get("world") == TOY_WORLD:
            return TOY_WORLD
    return None


def canonical_caption(prompt: str) -> str:
    """Normalise a toy prompt to the training grammar ("A cube, FRONT view" -> "a white cube, front view");
    "" for an empty prompt (the unconditional caption). Raises PromptError for unknown words."""
    if not prompt.strip():
        return ""
    words = tokenize_words(prompt)
    views = [w for w in words if w in VIEWS]
    return parse_prompt(prompt).caption(views[-1] if views else None)


def toy_captions(prompts: list[str]) -> list[str]:
    """``canonical_caption`` of each prompt; PriorError (listing the known words) for one the world cannot read."""
    from distill3d.priors.base import PriorError  # imports torch; this module's other helpers do not

    out = []
    for p in prompts:
        try:
            out.append(canonical_caption(p))
        except PromptError as e:
            raise PriorError(str(e)) from None
    return out


def toy_prompt_error(prompt: str) -> str | None:
    """None if ``prompt`` is a toy-world caption, else the reason with the words the world knows."""
    try:
        check_prompt(prompt)
        parse_prompt(prompt)
    except PromptError as e:
        return str(e)
    return None


def toy_textureless_prompt(prompt: str) -> str:
    """The toy world renders a white plain object under the same Lambertian light as DreamFusion's textureless
    shading, so the textureless prompt is the shape in white, without stripes or face (both are albedo). Measured
    (green cone, guidance 10, 1000 steps, ring IoU of the field's opacity): scoring textureless renders against
    "a green cone" left a teardrop (0.61); against "a white cone", 0.81."""
    return ObjectSpec(shape=parse_prompt(prompt).shape).caption()
