"""One prompt -> one asset folder: the single function `generate`, batch rows and compare/sweep items all use.

    make_asset(request):
      1. resolve the method's chain for the request and plan it (flows/plan.py: params validated, keys computed,
         the store checked; no Prefect)
      2. every stage already in the store (and no forced re-run): copy the outputs, Prefect never starts;
         otherwise run the method's flow (flows/<method>.py), a subflow when called inside a flow run (Prefect's
         temporary server started first, while the stages' slow imports load: flows/server_start.py)
      3. write `out/` atomically: mesh.glb, turntable.gif, views.png (the asset step's files), metrics.json (toy
         prompts), manifest.json (the request and every stage's key, params, timings and output)
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flows.method_spec import Method
from flows.methods import get_method
from flows.plan import Plan, chain_manifest, check_from_stage, default_params_file, plan, resolve_chain
from flows.server_start import start_server
from stages.core.protocol import StageError
from stages.core.store import atomic_dir

ASSET_FILES = ("mesh.glb", "turntable.gif", "views.png")


@dataclass
class AssetRequest:
    """Everything that decides an asset (JSON-able: it is also a deployment's parameters).

    `inputs`: the method's input folders by name (priors: defaults from params.yaml); `params`: {stage: {dotted.key:
    value}} overrides; `provided`: outputs by role for replaceable steps (--init-from); `from_stage`: re-run that
    step and all after it even when cached."""

    prompt: str
    out: str
    method: str = "dreamfusion"
    seed: int = 0
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    params_file: str | None = None
    provided: dict[str, str] = field(default_factory=dict)
    from_stage: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def params_path(self) -> Path | None:
        return Path(self.params_file) if self.params_file else default_params_file()


def plan_request(request: AssetRequest) -> Plan:
    """The request's plan (StageError, one line, for anything invalid); nothing runs, no Prefect."""
    chain = resolve_chain(request.method, request.prompt, inputs=request.inputs, overrides=request.params,
                          seed=request.seed, device=request.device, params_file=request.params_path,
                          provided=request.provided)
    if request.from_stage:
        check_from_stage(chain, request.from_stage)
    return plan(chain)


def run_method_flow(request: AssetRequest) -> dict[str, str]:
    """Run the method's Prefect flow for `request` (imports Prefect); returns {step: output dir}."""
    flow = getattr(importlib.import_module(f"flows.{request.method}"), request.method)
    return flow(prompt=request.prompt, params=request.params, seed=request.seed, device=request.device,
                params_file=str(request.params_path) if request.params_path else None, inputs=request.inputs,
                provided=request.provided or None, from_stage=request.from_stage)


def _role_output(method: Method, outputs: dict[str, str], role: str) -> Path | None:
    step = next((s for s in method.steps if s.role == role and s.name in outputs), None)
    return Path(outputs[step.name]) if step else None


def _copy_tree(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_file() and rel.as_posix() != "manifest.json":
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / rel)


def assemble(method: Method, outputs: dict[str, str], out: Path, info: dict[str, Any]) -> None:
    """Write `out` atomically: the asset step's files, the metrics step's metrics.json, a manifest of the chain."""
    asset = _role_output(method, outputs, "asset")
    if asset is None:
        raise StageError(f"{method.name} made no asset (its steps: {', '.join(outputs)})")
    missing = [f for f in ASSET_FILES if not (asset / f).is_file()]
    if missing:
        raise StageError(f"asset output {asset} lacks {', '.join(missing)}")
    metrics = _role_output(method, outputs, "metrics")
    with atomic_dir(out) as tmp:
        _copy_tree(asset, tmp)
        if metrics is not None and (metrics / "metrics.json").is_file():
            shutil.copy2(metrics / "metrics.json", tmp / "metrics.json")
        manifest = {**info, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "stages": chain_manifest(outputs)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")  # chain order


def read_asset_manifest(out: Path) -> dict | None:
    """An assembled asset's manifest.json (assets have no `complete` flag: the folder appears atomically)."""
    try:
        data = json.loads((Path(out) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(out: Path, planned: Plan) -> bool:
    """True if `out` is an assembled asset of exactly the plan's stage outputs (same keys)."""
    stages = (read_asset_manifest(out) or {}).get("stages") or {}
    return bool(stages) and set(stages) == set(planned.names()) and all(
        (stages.get(s.name) or {}).get("key") == s.key for s in planned.steps)


def make_asset(request: AssetRequest, planned: Plan | None = None) -> dict[str, Any]:
    """Make `request.out` (see the module docstring); returns {out, cached, seconds}. `planned`: the request's
    plan when the caller has it already."""
    t0 = time.perf_counter()
    planned = planned or plan_request(request)
    method = get_method(request.method)
    cached = planned.complete and not request.from_stage
    out = Path(request.out)
    info = {**request.to_dict(), "inputs": {k: str(v) for k, v in planned.chain.inputs.items()}, "cached": cached}
    if cached:
        if not is_current(out, planned):
            assemble(method, planned.outputs, out, info)
    else:
        start_server(planned, request.from_stage)  # with the prior's imports, on the other core
        assemble(method, run_method_flow(request), out, info)
    return {"out": str(out), "cached": cached, "seconds": round(time.perf_counter() - t0, 3)}
