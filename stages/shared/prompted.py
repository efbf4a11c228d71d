"""What every prompt-driven stage shares: its run-time params, the cheap prompt check and loading the prior."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from stages.core.protocol import StageError, StageParams
from stages.shared.prior_check import check_prompt_for_prior


class PromptedParams(StageParams):
    """Params of a stage that asks a prior about a prompt (the flow fills prompt, seed and device)."""

    prompt: str = Field("", description="text prompt (for the toy prior: words of the toy vocabulary)")
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"


def check_prompted(params: PromptedParams, inputs: dict[str, Path]) -> None:
    check_prompt_for_prior(params.prompt, inputs["prior"])


def check_device(params: PromptedParams) -> None:
    """StageError when CUDA is asked for but absent."""
    import torch

    if params.device == "cuda" and not torch.cuda.is_available():
        raise StageError("device is cuda but no CUDA device is available: use --device cpu")


def load_stage_prior(params: PromptedParams, prior_dir: Path):
    """The prior on the stage's (checked) device; seeds torch with the stage's seed."""
    import torch

    from distill3d.priors.loading import load_prior

    check_device(params)
    torch.manual_seed(params.seed)
    return load_prior(prior_dir, device=params.device)
