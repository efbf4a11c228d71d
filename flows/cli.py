"""The `distill3d` command line.

    distill3d generate --method dreamfusion --prompt "a red cube" --out out/red_cube [--steps N] [--seed S]
                       [--device cpu|cuda] [--guidance-scale W] [--prior DIR] [--params params.yaml] [--set k=v]
    distill3d evaluate --asset out/red_cube --prompt "a red cube" [--out metrics.json]
    distill3d toyworld gt --prompt "a red cube" --out gt.glb
    distill3d batch --prompts prompts.txt --out out/batch [--method M] [--concurrency N] [--deployment D]
    distill3d generate ... --from-stage extract_mesh   (re-run that stage and the ones after it)
    distill3d compare --methods dreamfusion,textmesh --prompts prompts.txt [--seeds 0,1] --out out/cmp
    distill3d sweep --prompt "a red cube" --guidance-scales 5,10,30,100 --seeds 0,1 --out out/sweep

`tasks` is imported first (it sets Prefect's environment); Prefect itself is imported only when a stage must run.
Bad input prints one line `error: ...` on stderr and exits with code 2, leaving no partial output.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Optional

import tasks  # noqa: F401  (first: sets PREFECT_HOME etc. before anything imports prefect)
import typer
from flows.plan import METHODS, chain_manifest, default_params_file, plan
from stages.common import (
    StageError,
    atomic_dir,
    execute,
    get_stage,
    load_params,
    parse_override,
    read_params_file,
    set_dotted,
)

# CLI options that are shorthands for stage params (the stage's field names)
SHORTCUTS = {"steps": "nerf_sds.optimize.steps", "guidance_scale": "nerf_sds.guidance.guidance_scale"}
# Options several commands share, declared once.
DeviceOption = Annotated[str, typer.Option(help="cpu or cuda")]
ParamsOption = Annotated[Optional[Path], typer.Option(help="params file (default ./params.yaml if present)")]
PriorOption = Annotated[Optional[Path], typer.Option(help="prior folder (default: params.yaml's prior.path)")]

ASSET_FILES = ("mesh.glb", "turntable.gif", "views.png")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Text-to-3D by score distillation, as cached stages.")
toyworld_app = typer.Typer(no_args_is_help=True, help="The toy world: ground truth for toy prompts.")
app.add_typer(toyworld_app, name="toyworld")


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    return typer.Exit(2)


def friendly(fn: Callable) -> Callable:
    """Turn user errors (StageError, PromptError, PriorError, validation ValueErrors) into one line + exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (StageError, ValueError, FileNotFoundError) as exc:
            raise fail(str(exc) or type(exc).__name__) from None

    return wrapper


def section_overrides(items: list[str], shortcuts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """['nerf_sds.steps=10', ...] + {'steps': 10} -> {'nerf_sds': {'steps': 10}} (dotted keys kept dotted)."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in shortcuts.items():
        if value is not None:
            section, _, key = SHORTCUTS[name].partition(".")
            out.setdefault(section, {})[key] = value
    for item in items:
        dotted, value = parse_override(item)
        section, _, key = dotted.partition(".")
        if not key:
            raise StageError(f"--set {item!r}: the key must start with a stage, e.g. nerf_sds.steps=100")
        out.setdefault(section, {})[key] = value
    return out


def default_prior(params_file: Path | None) -> Path:
    """params.yaml's `prior.path`, else models/toy_prior."""
    whole = read_params_file(params_file) if params_file else {}
    path = (whole.get("prior") or {}).get("path") if isinstance(whole.get("prior"), dict) else None
    return Path(path or "models/toy_prior")


def _copy_tree(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_file() and rel.as_posix() != "manifest.json":
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / rel)


def assemble(outputs: dict[str, str], out: Path, info: dict[str, Any]) -> None:
    """Write `out` atomically: the export stage's files, evaluate's metrics.json, and a manifest of the chain."""
    asset = Path(outputs["export_asset"])
    missing = [f for f in ASSET_FILES if not (asset / f).is_file()]
    if missing:
        raise StageError(f"export_asset output {asset} lacks {', '.join(missing)}")
    with atomic_dir(out) as tmp:
        _copy_tree(asset, tmp)
        if "evaluate" in outputs and (Path(outputs["evaluate"]) / "metrics.json").is_file():
            shutil.copy2(Path(outputs["evaluate"]) / "metrics.json", tmp / "metrics.json")
        manifest = {**info, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "stages": chain_manifest(outputs)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


@app.command()
@friendly
def generate(
    prompt: Annotated[str, typer.Option(help="text prompt, e.g. 'a red cube'")],
    out: Annotated[Path, typer.Option(help="output directory (mesh.glb, turntable.gif, views.png, manifest.json)")],
    method: Annotated[str, typer.Option(help=f"one of: {', '.join(METHODS)}")] = "dreamfusion",
    steps: Annotated[Optional[int], typer.Option(help=f"optimisation steps ({SHORTCUTS['steps']})")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    device: DeviceOption = "cpu",
    guidance_scale: Annotated[Optional[float], typer.Option(help=f"CFG weight ({SHORTCUTS['guidance_scale']})")] = None,
    prior: Annotated[Optional[Path], typer.Option(help="prior folder: the toy prior or a diffusers SD folder "
                                                  "(default: params.yaml's prior.path, else models/toy_prior)")] = None,
    params: ParamsOption = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="STAGE.key=value override (repeatable)")] = None,
    from_stage: Annotated[Optional[str], typer.Option(help="re-run this stage and all after it even if cached "
                                                      "(e.g. extract_mesh); earlier stages are reused")] = None,
    init_from: Annotated[Optional[str], typer.Option(help="seed the chain from an earlier run: a generate output "
                                                     "dir, a stage output dir or a stage key (textmesh)")] = None,
    init_mode: Annotated[str, typer.Option(help="with --init-from: 'refine' reuses its geometry, 'sdf' starts "
                                           "the SDF from its mesh")] = "refine",
    depth_prior: Annotated[Optional[Path], typer.Option(help="textmesh: a local Stable Diffusion 2 depth folder "
                                                        "(diffusers layout) that makes the pseudo ground truth "
                                                        "from the canonical views and their depth")] = None,
) -> None:
    """Generate a 3D asset from a prompt; stages already computed for the same inputs are reused."""
    if device not in ("cpu", "cuda"):
        raise StageError(f"--device must be cpu or cuda, not {device!r}")
    overrides = section_overrides(set_ or [], {"steps": steps, "guidance_scale": guidance_scale})
    pfile = params or default_params_file()
    prior = prior or default_prior(pfile)
    init = None
    if init_from is not None:
        from flows.init import init_artifacts

        init = init_artifacts(init_from, init_mode)
    if depth_prior is not None:
        if method != "textmesh":
            raise StageError(f"--depth-prior is for --method textmesh (its pseudo_gt stage), not {method}")
        init = {**(init or {}), "depth_prior": str(depth_prior)}
    planned = plan(prompt, prior, overrides, seed, device, pfile, method, init=init)  # validates all, no Prefect
    info = {"method": method, "prompt": prompt, "seed": seed, "device": device, "prior": str(prior),
            "params_file": str(pfile) if pfile else None, "overrides": overrides, "cached": planned.complete}
    if init:
        info["init"] = init
    if from_stage:  # forced re-run of from_stage and downstream (flows/batch.py: rerun_from)
        names = [s.name for s in planned.steps]
        if from_stage not in names:
            raise StageError(f"--from-stage {from_stage!r} is not a stage of {method} for this prompt; "
                             f"choose one of {names}")
        info.update(cached=False, from_stage=from_stage)
        outputs = _run_flow("batch", flow_name="rerun_from", method=method, from_stage=from_stage, prompt=prompt,
                            prior=str(prior), params=overrides, seed=seed, device=device,
                            params_file=str(pfile) if pfile else None)
        assemble(outputs, out, info)
        typer.echo(f"done (from {from_stage}): {out}", err=True)
        return
    if planned.complete:
        outputs = planned.outputs  # fast path: every stage is in the store, Prefect never starts
    else:
        outputs = _run_flow(method, prompt=prompt, prior=str(prior), params=overrides, seed=seed, device=device,
                            params_file=str(pfile) if pfile else None, **({"init": init} if init else {}))
    assemble(outputs, out, info)
    typer.echo(f"{'cached' if planned.complete else 'done'}: {out}", err=True)


class _NoPrefectErrors(logging.Filter):
    """Prefect logs a failing task with its traceback; the CLI reports the error itself (one line for user
    errors, a traceback for bugs). The records still reach Prefect's API (and UI, with a server)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("prefect") and record.levelno >= logging.ERROR)


def quiet_prefect_errors() -> None:
    """Keep Prefect's per-task error tracebacks off the console (the CLI prints one line; the API keeps them)."""
    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.addFilter(_NoPrefectErrors())


def _run_flow(module: str, /, flow_name: str | None = None, **kwargs: Any) -> Any:
    # imports prefect (~10 s first call); the flow is flows.<module>.<flow_name or module>
    flow = getattr(importlib.import_module(f"flows.{module}"), flow_name or module)
    quiet_prefect_errors()
    return flow(**kwargs)


@app.command()
@friendly
def batch(
    prompts: Annotated[Path, typer.Option(help="prompt source: a .txt or .csv file, or a folder of them; rows may "
                                          "set method=, seed=, name= and STAGE.key=value (flows/prompts_source.py)")],
    out: Annotated[Path, typer.Option(help="output folder: one asset folder per prompt + index.html gallery")],
    method: Annotated[str, typer.Option(help=f"default method of the rows: {', '.join(METHODS)}")] = "dreamfusion",
    concurrency: Annotated[int, typer.Option(min=1, help="prompts generated at once (>1: a process each, or "
                                             "flow runs on the work pool with --deployment)")] = 1,
    steps: Annotated[Optional[int], typer.Option(help=f"optimisation steps ({SHORTCUTS['steps']})")] = None,
    seed: Annotated[int, typer.Option(help="default seed of the rows")] = 0,
    device: DeviceOption = "cpu",
    prior: PriorOption = None,
    params: ParamsOption = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="STAGE.key=value for every row (repeatable)")] = None,
    deployment: Annotated[Optional[str], typer.Option(help="run each prompt as a run of this deployment on the work "
                                                      "pool, e.g. generate-asset/asset (needs PREFECT_API_URL)")] = None,
) -> None:
    """Generate an asset per prompt of a file or folder, then an offline gallery (OUT/index.html).

    A bad prompt fails alone (its reason is in the gallery and OUT/summary.json); exit code 1 if any failed."""
    if device not in ("cpu", "cuda"):
        raise StageError(f"--device must be cpu or cuda, not {device!r}")
    overrides = section_overrides(set_ or [], {"steps": steps, "guidance_scale": None})
    pfile = params or default_params_file()
    prior = prior or default_prior(pfile)
    if not Path(prior).exists():
        raise StageError(f"prior not found at {prior}: run `dvc repro train_prior` or pass --prior DIR")
    from flows.prompts_source import run_batch  # runs flows.batch.batch only when something must run

    quiet_prefect_errors()
    result = run_batch(prompts, out, method=method, seed=seed, params=overrides, prior=str(prior), device=device,
                       params_file=pfile, concurrency=concurrency, deployment=deployment)
    _report_outcome(result, lambda e: f"{e['prompt']}  ({e['source']})", result["gallery"])


@app.command()
@friendly
def evaluate(
    asset: Annotated[Path, typer.Option(help="an asset directory (with mesh.glb) or a .glb file")],
    prompt: Annotated[str, typer.Option(help="the toy-world prompt the asset should show")],
    out: Annotated[Optional[Path], typer.Option(help="write the metrics as JSON here")] = None,
    params: ParamsOption = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key=value override of the evaluate params")] = None,
) -> None:
    """Score an asset against the toy world's ground truth for the prompt."""
    module = get_stage("evaluate")
    overrides: dict[str, Any] = {"prompt": prompt} if "prompt" in module.Params.model_fields else {}
    for item in set_ or []:
        set_dotted(overrides, *parse_override(item))
    p = load_params(module, params or default_params_file(), "evaluate", overrides)
    if not asset.exists():
        raise StageError(f"asset not found: {asset}")
    with tempfile.TemporaryDirectory(prefix="distill3d-eval-") as tmp:
        asset_dir = asset
        if asset.is_file():
            asset_dir = Path(tmp) / "asset"
            asset_dir.mkdir()
            shutil.copy2(asset, asset_dir / "mesh.glb")
        result = execute(module, p, {module.INPUTS[0]: asset_dir}, Path(tmp) / "out")
        metrics = json.loads((result / "metrics.json").read_text())
    text = json.dumps(metrics, indent=2, sort_keys=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        staged.write_text(text + "\n")
        os.replace(staged, out)
    typer.echo(text)


@toyworld_app.command("gt")
@friendly
def toyworld_gt(
    prompt: Annotated[str, typer.Option(help="toy-world prompt, e.g. 'a blue striped torus'")],
    out: Annotated[Path, typer.Option(help="output .glb file")],
) -> None:
    """Write the toy world's ground-truth mesh for a prompt as GLB."""
    from distill3d.toyworld.vocab import parse_prompt

    spec = parse_prompt(prompt)  # PromptError (one line) before the heavier imports
    from distill3d.mesh.gltf import save_glb
    from distill3d.toyworld.gt_mesh import gt_mesh

    mesh = gt_mesh(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix or '.glb'}")
    try:
        save_glb(mesh, staged)
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)
    typer.echo(f"wrote {out}", err=True)


def _split_list(text: str, kind: type, option: str) -> list:
    """'0,1' -> [0, 1] (StageError naming the option on a bad item)."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise StageError(f"{option} takes a comma-separated list of {kind.__name__}s, not {text!r}") from None
    if not values:
        raise StageError(f"{option} is empty")
    return values


def _report_setup(device: str, prior: Optional[Path], params: Optional[Path]) -> tuple[Path | None, Path]:
    if device not in ("cpu", "cuda"):
        raise StageError(f"--device must be cpu or cuda, not {device!r}")
    pfile = params or default_params_file()
    prior = prior or default_prior(pfile)
    if not Path(prior).exists():
        raise StageError(f"prior not found at {prior}: run `dvc repro train_prior` or pass --prior DIR")
    quiet_prefect_errors()
    return pfile, prior


def _report_outcome(result: dict, label: Callable[[dict], str] | None = None, index: str | None = None) -> None:
    """One line per item (status, label, output or reason), a total, and exit code 1 if any item failed."""
    label = label or (lambda e: f"{e['method']} s{e['seed']}  {e['prompt']}")
    for e in result["entries"]:
        detail = e["out"] if e["status"] != "failed" else e["reason"]
        typer.echo(f"{e['status']:>6}  {label(e)}: {detail}", err=True)
    typer.echo(f"{result['ok']} ok, {result['failed']} failed: {index or result['report']}", err=True)
    if result["failed"]:
        raise typer.Exit(1)


@app.command()
@friendly
def compare(
    prompts: Annotated[Path, typer.Option(help="prompt file: one prompt per line (options after `|` as in batch)")],
    out: Annotated[Path, typer.Option(help="report folder: index.html, report.md, metrics.json, runs/<item>/")],
    methods: Annotated[str, typer.Option(help="comma-separated methods, e.g. dreamfusion,textmesh")] = "dreamfusion",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds, e.g. 0,1")] = "0",
    steps: Annotated[Optional[int], typer.Option(help="optimisation steps of each method's first stage "
                                                 "(nerf_sds / sdf_nerf optimize.steps)")] = None,
    device: DeviceOption = "cpu",
    prior: PriorOption = None,
    params: ParamsOption = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="STAGE.key=value, applied to the methods that "
                                                      "have STAGE (repeatable)")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="items generated at once (>1: a process each)")] = 1,
    title: Annotated[str, typer.Option(help="report title")] = "distill3d comparison",
) -> None:
    """Compare methods over prompts (and seeds): an asset each (cached ones reused), then an offline report with
    the turntables side by side and the metrics tables (OUT/index.html, OUT/report.md, OUT/metrics.json)."""
    method_list = _split_list(methods, str, "--methods")
    seed_list = _split_list(seeds, int, "--seeds")
    overrides = section_overrides(set_ or [], {})
    if steps is not None:
        from flows.compare_report import check_methods

        for m in check_methods(method_list):  # a method's first stage is its optimisation stage
            overrides.setdefault(METHODS[m][0], {})["optimize.steps"] = steps
    pfile, prior = _report_setup(device, prior, params)
    from flows.compare_report import run_compare  # starts Prefect only when something must run

    _report_outcome(run_compare(prompts, out, methods=method_list, seeds=seed_list, params=overrides,
                                prior=str(prior), device=device, params_file=pfile, concurrency=concurrency,
                                title=title))


@app.command()
@friendly
def sweep(
    prompt: Annotated[str, typer.Option(help="text prompt, e.g. 'a red cube'")],
    out: Annotated[Path, typer.Option(help="report folder: sweep_grid.png, sweep_plot.png, sweep.json, index.html")],
    guidance_scales: Annotated[str, typer.Option(help="comma-separated CFG weights")] = "5,10,30,100",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0,1",
    method: Annotated[str, typer.Option(help=f"one of: {', '.join(METHODS)}")] = "dreamfusion",
    steps: Annotated[Optional[int], typer.Option(help=f"optimisation steps ({SHORTCUTS['steps']})")] = None,
    device: DeviceOption = "cpu",
    prior: PriorOption = None,
    params: ParamsOption = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="STAGE.key=value override (repeatable)")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="points generated at once (>1: a process each)")] = 1,
) -> None:
    """DreamFusion Fig. 9: generate over guidance scales x seeds (each point a cached generate), then the grid of
    final renders, the saturation/IoU vs guidance plot and a report page."""
    scales = _split_list(guidance_scales, float, "--guidance-scales")
    seed_list = _split_list(seeds, int, "--seeds")
    overrides = section_overrides(set_ or [], {})
    if steps is not None:
        stage = {"dreamfusion": "nerf_sds", "textmesh": "sdf_nerf"}.get(method, "nerf_sds")
        overrides.setdefault(stage, {})["optimize.steps"] = steps
    pfile, prior = _report_setup(device, prior, params)
    from flows.compare_report import run_sweep  # starts Prefect only when something must run

    result = run_sweep(prompt, out, guidance_scales=scales, seeds=seed_list, method=method, params=overrides,
                       prior=str(prior), device=device, params_file=pfile, concurrency=concurrency)
    s = result["sweep"]
    for row in s["by_scale"]:
        typer.echo(f"w={row['guidance_scale']:g}: saturation {row['saturation']}, IoU {row['iou_mean']}", err=True)
    _report_outcome(result)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
