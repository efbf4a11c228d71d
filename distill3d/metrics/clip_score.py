"""CLIP R-precision (DreamFusion, Poole et al. 2022, sec. 4; after Park et al. 2021).

For each rendered view, CLIP ranks a set of candidate captions by cosine similarity between the image embedding and
each caption embedding; R-precision is the fraction of views whose top-ranked caption is the prompt's own caption
(R = 1 relevant caption per image). DreamFusion uses object-centric COCO captions as distractors; for the toy world
the candidates are all of its captions (``toy_captions``), the target being the prompt's canonical caption.

The model is read only from a local folder, never downloaded: a transformers layout (``config.json`` of a
``CLIPModel`` + tokenizer + ``preprocessor_config.json``) or an open_clip layout (``open_clip_config.json`` + weights,
loaded with ``open_clip`` if that package is installed). Without a folder, or with one that cannot be used,
``clip_r_precision`` returns {"skipped": reason}: it never makes a number up.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from distill3d.toyworld.vocab import PromptError, all_specs, parse_prompt


class ClipUnavailable(RuntimeError):
    """No usable CLIP model; the message is the reason reported as {"skipped": reason}."""


@dataclass
class ClipScorer:
    """Unit-norm CLIP embeddings. encode_images: (N, H, W, 3) float in [0, 1] -> (N, D); encode_texts: M str ->
    (M, D)."""

    encode_images: Callable[[torch.Tensor], torch.Tensor]
    encode_texts: Callable[[list[str]], torch.Tensor]
    source: str


def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    arr = (images.detach().cpu().float().clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    return [Image.fromarray(a[..., :3]) for a in arr]


def _first(embeds: Any) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor from get_*_features."""
    if isinstance(embeds, torch.Tensor):
        return embeds
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(embeds, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise ClipUnavailable(f"unexpected CLIP feature output {type(embeds).__name__}")


def _load_transformers(path: Path, device: str) -> ClipScorer:
    from transformers import AutoTokenizer, CLIPModel

    try:  # transformers 5 without torchvision: the PIL-backed processor, same preprocessing
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - older transformers
        from transformers import CLIPImageProcessor as ImageProcessor

    model = CLIPModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    processor = ImageProcessor.from_pretrained(str(path), local_files_only=True)
    max_len = model.config.text_config.max_position_embeddings

    @torch.no_grad()
    def encode_images(images: torch.Tensor) -> torch.Tensor:
        pixels = processor(images=_to_pil(images), return_tensors="pt")["pixel_values"].to(device)
        return torch.nn.functional.normalize(_first(model.get_image_features(pixel_values=pixels)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(texts: list[str]) -> torch.Tensor:
        tok = tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt").to(device)
        feats = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok.get("attention_mask"))
        return torch.nn.functional.normalize(_first(feats).float(), dim=-1)

    return ClipScorer(encode_images, encode_texts, f"transformers:{path}")


def _load_open_clip(path: Path, device: str) -> ClipScorer:  # pragma: no cover - needs the open_clip package
    try:
        import open_clip
    except ImportError:
        raise ClipUnavailable(f"{path} is an open_clip folder but the open_clip package is not installed") from None
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{path}", device=device)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    model.eval()

    @torch.no_grad()
    def encode_images(images: torch.Tensor) -> torch.Tensor:
        batch = torch.stack([preprocess(im) for im in _to_pil(images)]).to(device)
        return torch.nn.functional.normalize(model.encode_image(batch).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(model.encode_text(tokenizer(texts).to(device)).float(), dim=-1)

    return ClipScorer(encode_images, encode_texts, f"open_clip:{path}")


def load_clip(path: str | os.PathLike, device: str = "cpu") -> ClipScorer:
    """Load a CLIP model from a local folder (transformers or open_clip layout). Raises ``ClipUnavailable``."""
    path = Path(path)
    if not path.is_dir():
        raise ClipUnavailable(f"CLIP model folder not found: {path}")
    if (path / "open_clip_config.json").is_file():
        return _load_open_clip(path, device)
    config = path / "config.json"
    if not config.is_file():
        raise ClipUnavailable(f"{path} has neither config.json (transformers CLIPModel) nor open_clip_config.json")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise ClipUnavailable(f"unreadable {config}: {exc}") from None
    if model_type != "clip":
        raise ClipUnavailable(f"{config} describes model_type {model_type!r}, not a CLIP model ('clip')")
    try:
        return _load_transformers(path, device)
    except ClipUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - any loading failure is a reason to skip, reported verbatim
        raise ClipUnavailable(f"could not load CLIP from {path}: {type(exc).__name__}: {exc}") from None


def toy_captions() -> list[str]:
    """Every distinct toy-world caption (no view phrase), sorted: the default R-precision candidates."""
    return sorted({spec.caption() for spec in all_specs()})


def target_caption(prompt: str) -> str:
    """The prompt's canonical toy caption (e.g. 'a cube' -> 'a white cube'), or the prompt itself off the toy world."""
    try:
        return parse_prompt(prompt).caption()
    except PromptError:
        return prompt.strip()


def r_precision(
    scorer: ClipScorer, images: torch.Tensor, target: str, candidates: list[str], batch: int = 16
) -> dict[str, Any]:
    """R-precision of images (N, H, W, 3) in [0, 1] for caption ``target`` among ``candidates`` (target added if
    missing). Returns {r_precision in [0, 1], per_view_correct (N bools), per_view_top (N captions), n_images,
    n_candidates, target, model}."""
    captions = list(dict.fromkeys(candidates))
    if target not in captions:
        captions.append(target)
    text = torch.cat([scorer.encode_texts(captions[s : s + 64]) for s in range(0, len(captions), 64)])
    img = torch.cat([scorer.encode_images(images[s : s + batch]) for s in range(0, len(images), batch)])
    top = (img @ text.T).argmax(dim=-1).tolist()
    correct = [captions[k] == target for k in top]
    return {
        "r_precision": float(np.mean(correct)) if correct else None,
        "per_view_correct": correct,
        "per_view_top": [captions[k] for k in top],
        "n_images": len(correct),
        "n_candidates": len(captions),
        "target": target,
        "model": scorer.source,
    }


def clip_r_precision(
    images: torch.Tensor, prompt: str, model_path: str | os.PathLike | None, candidates: list[str] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """CLIP R-precision of renders (N, H, W, 3) for ``prompt`` with the CLIP model at ``model_path``, or
    {"skipped": reason} when there is no usable model (no path, missing folder, unknown layout, load error)."""
    if model_path is None or str(model_path) == "":
        return {"skipped": "no CLIP model folder given (pass clip_model / --clip-model PATH to a local CLIP)"}
    try:
        scorer = load_clip(model_path, device)
    except ClipUnavailable as exc:
        return {"skipped": str(exc)}
    return r_precision(scorer, images, target_caption(prompt), toy_captions() if candidates is None else candidates)
