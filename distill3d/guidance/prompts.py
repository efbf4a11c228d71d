"""View-dependent prompts (DreamFusion Sec. 3.2): append ", front view" / ", side view" / ", back view" /
", overhead view" to the prompt according to each camera's azimuth and elevation (``Cameras.view_phrases``)."""

from __future__ import annotations

import torch

from distill3d.cameras import VIEW_PHRASES, Cameras
from distill3d.priors.base import Prior, PriorError, TextEmbeddings


class ViewPrompts:
    """Embeds ``prompt`` once per view phrase (and the empty prompt once) and picks rows per camera.

    Raises the prior's ``PriorError`` (message from ``prior.prompt_error``) when the prior cannot read a prompt.
    """

    def __init__(self, prior: Prior, prompt: str, view_dependent: bool = True):
        self.prompt = prompt
        self.view_dependent = view_dependent
        texts = [f"{prompt}, {v} view" for v in VIEW_PHRASES] if view_dependent else [prompt]
        for p in [prompt] + texts:
            err = prior.prompt_error(p)
            if err is not None:
                raise PriorError(err)
        self.texts = texts
        with torch.no_grad():
            self.cond = prior.encode_text(texts).detach()  # (V, L, D)
            self.uncond = prior.encode_text([""]).detach()  # (1, L, D)

    def prompts_for(self, cams: Cameras) -> list[str]:
        """The prompt string used for each camera."""
        if not self.view_dependent:
            return [self.texts[0]] * len(cams)
        return [self.texts[VIEW_PHRASES.index(v)] for v in cams.view_phrases()]

    def for_cameras(self, cams: Cameras) -> TextEmbeddings:
        """cond (B, L, D) chosen per camera, uncond (1, L, D)."""
        if self.view_dependent:
            idx = torch.tensor([VIEW_PHRASES.index(v) for v in cams.view_phrases()], device=self.cond.device)
        else:
            idx = torch.zeros(len(cams), dtype=torch.long, device=self.cond.device)
        return TextEmbeddings(cond=self.cond[idx], uncond=self.uncond)
