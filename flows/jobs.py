"""Many assets at once, before anything runs (no Prefect): prompt rows -> asset requests -> checked entries.

A batch, a comparison and a sweep are all lists of entries, one asset each:

    entry = {name, prompt, source, method, seed, params, status, reason, seconds, cached, out, request}

`prepare` checks every row against its method (words, params, input folders) and finishes the rows whose stages
are all in the store (their assets are assembled at once, status "cached"); a bad row is "failed" with its one-line
reason; the rest are "pending" for a runner (flows/batch.py's `run_pending`) to make with `flows.asset`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.asset import AssetRequest, make_asset, plan_request
from flows.methods import get_method
from distill3d.report.gallery import SUCCESS
from flows.prompts_source import PromptRow
from stages.core.protocol import StageError


@dataclass
class Defaults:
    """What a row does not set itself: the batch-wide method, seed, params overrides, CLI shortcuts (resolved per
    row's method: --steps addresses each method's own optimisation stage), input folders, device, params file."""

    method: str = "dreamfusion"
    seed: int = 0
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: int | None = None
    guidance_scale: float | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    params_file: str | None = None


def merge_sections(*layers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-section overrides {section: {key: value}} layered left to right (a later layer's key wins)."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update(values)
    return out


def row_request(row: PromptRow, out_dir: Path, defaults: Defaults) -> AssetRequest:
    """The asset request of a row: the defaults, the method's shortcuts, then the row's own values (row wins).
    StageError for an unknown method."""
    method = get_method(row.method or defaults.method)
    shortcuts = method.shortcut_overrides(defaults.steps, defaults.guidance_scale)
    inputs = {k: v for k, v in defaults.inputs.items() if k in method.input_names}
    return AssetRequest(prompt=row.prompt, out=str(out_dir / row.name), method=method.name,
                        seed=row.seed if row.seed is not None else defaults.seed,
                        params=merge_sections(defaults.params, shortcuts, row.overrides), inputs=inputs,
                        device=defaults.device, params_file=defaults.params_file)


def _entry(row: PromptRow, request: AssetRequest | None, out_dir: Path) -> dict[str, Any]:
    return {"name": row.name, "prompt": row.prompt, "source": row.source,
            "method": request.method if request else row.method, "seed": request.seed if request else row.seed,
            "params": request.params if request else row.overrides, "status": "pending", "reason": None,
            "seconds": None, "cached": False, "out": str(out_dir / row.name),
            "request": request.to_dict() if request else None}


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def prepare(rows: list[PromptRow], out_dir: Path, defaults: Defaults) -> tuple[list[dict], list[dict]]:
    """Check every row and finish the cached ones; returns (entries in row order, entries still to run)."""
    entries, pending = [], []
    for row in rows:
        request = None
        try:
            if row.error:
                raise StageError(row.error)
            request = row_request(row, out_dir, defaults)
            planned = plan_request(request)
        except (StageError, ValueError) as exc:
            entries.append({**_entry(row, request, out_dir), "status": "failed", "reason": _reason(exc)})
            continue
        entry = _entry(row, request, out_dir)
        entries.append(entry)
        if not planned.complete:
            pending.append(entry)
            continue
        t0 = time.perf_counter()
        try:
            make_asset(request, planned)
            entry.update(status="cached", cached=True, seconds=round(time.perf_counter() - t0, 3))
        except (StageError, OSError) as exc:
            entry.update(status="failed", reason=_reason(exc))
    return entries, pending


def summarise(entries: list[dict], page: Path, key: str = "gallery") -> dict[str, Any]:
    ok = sum(e["status"] in SUCCESS for e in entries)
    return {"ok": ok, "failed": len(entries) - ok, key: str(page), "entries": entries}
