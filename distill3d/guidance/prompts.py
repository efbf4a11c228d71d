"""View-dependent prompts (DreamFusion Sec. 3.2): append ", front view" / ", side view" / ", back view" /
", overhead view" to the prompt according to each camera's azimuth and elevation (``Cameras.view_phrases``).

Textureless renders (DreamFusion 3.1) are scored against ``prior.textureless_prompt(prompt)``: the prompt itself
for a general prior, the white untextured object for a prior that knows one (the toy prior)."""

from __future__ import annotations

import torch

from distill3d.cameras import VIEW_PHRASES, Cameras
from distill3d.priors.base import Prior, PriorError, TextEmbeddings


class ViewPrompts:
    """Embeds ``prompt`` (and its textureless form) once per view phrase, and the empty prompt once; picks rows
    per camera.

    Raises the prior's ``PriorError`` (message from ``prior.prompt_error``) when the prior cannot read a prompt.
    """

    def __init__(self, prior: Prior, prompt: str, view_dependent: bool = True):
        self.prompt = prompt
        self.view_dependent = view_dependent
        err = prior.prompt_error(prompt)
        if err is not None:
            raise PriorError(err)
        self.texts = self._with_views(prompt)
        self.textureless_texts = self._with_views(prior.textureless_prompt(prompt))
        for p in self.texts + self.textureless_texts:
            err = prior.prompt_error(p)
            if err is not None:
                raise PriorError(err)
        with torch.no_grad():
            self.cond = prior.encode_text(self.texts).detach()  # (V, L, D)
            self.textureless_cond = (self.cond if self.textureless_texts == self.texts
                                     else prior.encode_text(self.textureless_texts).detach())
            self.uncond = prior.encode_text([""]).detach()  # (1, L, D)

    def _with_views(self, prompt: str) -> list[str]:
        return [f"{prompt}, {v} view" for v in VIEW_PHRASES] if self.view_dependent else [prompt]

    def _rows(self, cams: Cameras) -> list[int]:
        return [VIEW_PHRASES.index(v) for v in cams.view_phrases()] if self.view_dependent else [0] * len(cams)

    def prompts_for(self, cams: Cameras, textureless: bool = False) -> list[str]:
        """The prompt string used for each camera."""
        texts = self.textureless_texts if textureless else self.texts
        return [texts[i] for i in self._rows(cams)]

    def for_cameras(self, cams: Cameras, textureless: bool = False) -> TextEmbeddings:
        """cond (B, L, D) chosen per camera (from the textureless prompts when ``textureless``), uncond (1, L, D)."""
        cond = self.textureless_cond if textureless else self.cond
        idx = torch.tensor(self._rows(cams), dtype=torch.long, device=cond.device)
        return TextEmbeddings(cond=cond[idx], uncond=self.uncond)
