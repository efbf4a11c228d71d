"""The comparison's extra runs (params.yaml's `comparison.runs`): a method on one of the prompts, over seeds and a
swept param, with fixed overrides, and what the claims read from them (`evidence`).

    guidance_sds: {method: dreamfusion, prompt: red_cube, seeds: [0, 1], evidence: sds,
                   sweep: {nerf_sds.guidance.guidance_scale: [5, 20, 100]}}

expands to one point per (swept value, seed), named "w20-s1" (or "s1" without a sweep). The dvc.yaml generator
makes each point's chain (outputs under data/runs/<run>/<role>/<point>), and the comparison stage reads them back
through the same expansion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

EVIDENCE = ("sds", "vsd", "janus_no_view_prompts", "janus_view_prompts", "janus_multiview")


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str
    prompt: str = Field(description="a key of params.yaml's prompts")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    set: dict[str, Any] = Field(default_factory=dict, description="SECTION.dotted.key: value for every point")
    sweep: dict[str, list[float]] = Field(default_factory=dict, description="at most one SECTION.dotted.key: values")
    evidence: str = Field(description=f"what the claims read from it: one of {', '.join(EVIDENCE)}")

    @field_validator("sweep")
    @classmethod
    def _one_axis(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        if len(v) > 1:
            raise ValueError(f"a run sweeps at most one param, got {sorted(v)}")
        return v

    @field_validator("evidence")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in EVIDENCE:
            raise ValueError(f"evidence must be one of {', '.join(EVIDENCE)}, not {v!r}")
        return v


@dataclass(frozen=True)
class Point:
    """One run of a RunSpec: its name, seed, the swept value (None without a sweep) and every override
    {section: {dotted.key: value}}."""

    name: str
    seed: int
    value: float | None
    overrides: dict[str, dict[str, Any]]


def _section_overrides(items: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for dotted, value in items.items():
        section, _, key = dotted.partition(".")
        out.setdefault(section, {})[key] = value
    return out


def points(spec: RunSpec) -> list[Point]:
    """The run's points: every (swept value, seed), swept values first."""
    axis, values = next(iter(spec.sweep.items()), (None, [None]))
    out = []
    for value in values:
        for seed in spec.seeds:
            items = dict(spec.set)
            if axis is not None:
                items[axis] = value
            tag = "" if value is None else "w" + re.sub(r"[^0-9a-z]+", "_", f"{value:g}") + "-"
            out.append(Point(f"{tag}s{seed}", seed, value, _section_overrides(items)))
    return out
