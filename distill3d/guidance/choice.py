"""The guidance a stage optimises against, chosen by its params: ``kind`` "sds" (DreamFusion's SDS, the default),
"vsd" (ProlificDreamer's Variational Score Distillation) or "multiview" (MVDream's multi-view SDS). One typed
params section (``GuidanceConfig``) and one constructor (``guidance_for``), so every optimising stage takes any
of them the same way."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from distill3d.guidance.multiview_sds import MultiViewSDSConfig, MultiViewSDSGuidance
from distill3d.guidance.sds import Guidance, SDSConfig, SDSGuidance
from distill3d.guidance.vsd import VSDConfig, VSDGuidance
from distill3d.priors.base import Prior


def _kind(value: Any) -> str:
    return value.get("kind", "sds") if isinstance(value, dict) else getattr(value, "kind", "sds")


GuidanceConfig = Annotated[
    Union[Annotated[SDSConfig, Tag("sds")], Annotated[VSDConfig, Tag("vsd")],
          Annotated[MultiViewSDSConfig, Tag("multiview")]],
    Discriminator(_kind),
]


@contextlib.contextmanager
def guidance_for(cfg: SDSConfig | VSDConfig | MultiViewSDSConfig, prior: Prior) -> Iterator[Guidance]:
    """The loop's guidance for ``cfg``; VSD's LoRA is attached to ``prior`` inside the block and removed after."""
    if isinstance(cfg, VSDConfig):
        with VSDGuidance(prior, cfg) as vsd:
            yield vsd
    elif isinstance(cfg, MultiViewSDSConfig):
        yield MultiViewSDSGuidance(cfg)
    else:
        yield SDSGuidance(cfg)
