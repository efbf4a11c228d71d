"""Cheap prompt validation against a prior folder, before any model is loaded (no torch import)."""

from __future__ import annotations

import json
from pathlib import Path

from stages.core.protocol import StageError


def check_prompt_for_prior(prompt: str, prior_dir: Path) -> None:
    """StageError if ``prompt`` is empty, or unreadable by a toy prior (unknown words, listing the known ones)."""
    if not prompt or not prompt.strip():
        raise StageError("empty prompt: pass --prompt, e.g. --prompt 'a red cube'")
    info_file = Path(prior_dir) / "prior.json"
    if not info_file.is_file():
        return
    try:
        kind = json.loads(info_file.read_text()).get("kind")
    except ValueError:
        return  # load_prior reports a broken prior.json with the fix
    if str(kind).startswith("toy"):  # the toy priors (single- and multi-view) read the toy world's words only
        from distill3d.toyworld.vocab import PromptError, parse_prompt

        try:
            parse_prompt(prompt)
        except PromptError as exc:
            raise StageError(str(exc)) from None
