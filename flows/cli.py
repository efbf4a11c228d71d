"""The `distill3d` command line.

    distill3d generate --method dreamfusion --prompt "a red cube" --out out/red_cube [--steps N] [--seed S]
                       [--device cpu|cuda] [--guidance-scale W] [--prior DIR] [--input NAME=DIR] [--params FILE]
                       [--set STAGE.key=v] [--from-stage STAGE] [--init-from RUN [--init-mode refine|sdf]]
    distill3d methods                                   (the methods, their steps and inputs)
    distill3d evaluate --asset out/red_cube --prompt "a red cube" [--out metrics.json]
    distill3d toyworld gt --prompt "a red cube" --out gt.glb
    distill3d prior convert-mvdream --checkpoint sd-v2.1-base-4view.pt --sd-folder SD21_BASE --out models/mvdream
    distill3d batch --prompts prompts.txt --out out/batch [--method M] [--concurrency N] [--deployment D]
    distill3d compare --methods dreamfusion,textmesh --prompts prompts.txt [--seeds 0,1] --out out/cmp
    distill3d sweep --prompt "a red cube" --guidance-scales 5,10,30,100 --seeds 0,1 --out out/sweep

What a method is (its steps, inputs, which stage --steps and --guidance-scale address) comes from its definition
(flows/methods.py). `tasks` is imported first (it sets Prefect's environment); Prefect itself is imported only when a
stage must run. Bad input prints one line `error: ...` on stderr and exits with code 2, leaving no partial output.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Optional

import tasks  # noqa: F401  (first: sets PREFECT_HOME etc. before anything imports prefect)
import typer
from flows.asset import AssetRequest, make_asset, plan_request
from flows.jobs import Defaults, merge_sections
from flows.method_spec import Method
from flows.methods import get_method, methods
from flows.plan import default_params_file, resolve_inputs
from stages.core.execute import execute
from stages.core.params import load_params, parse_override, set_dotted
from stages.core.process_exit import exit_process
from stages.core.protocol import StageError, get_stage

METHOD_NAMES = ", ".join(methods())
# Options several commands share, declared once.
DeviceOption = Annotated[str, typer.Option(help="cpu or cuda")]
ParamsOption = Annotated[Optional[Path], typer.Option(help="params file (default ./params.yaml if present)")]
PriorOption = Annotated[Optional[Path], typer.Option(help="the method's prior folder: a toy prior or a local "
                                                     "diffusers folder (default: params.yaml's, per method)")]
InputOption = Annotated[Optional[list[str]], typer.Option("--input", help="NAME=DIR: one of the method's input "
                                                          "folders (see `distill3d methods`; repeatable)")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="STAGE.key=value override (repeatable)")]
StepsOption = Annotated[Optional[int], typer.Option(help="optimisation steps of the method's optimisation stage(s) "
                                                    "(`distill3d methods` lists which)")]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Text-to-3D by score distillation, as cached stages.")
toyworld_app = typer.Typer(no_args_is_help=True, help="The toy world: ground truth for toy prompts.")
app.add_typer(toyworld_app, name="toyworld")
prior_app = typer.Typer(no_args_is_help=True, help="Priors: turn released weights into folders --prior accepts.")
app.add_typer(prior_app, name="prior")


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


def section_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """['nerf_sds.optimize.steps=10', ...] -> {'nerf_sds': {'optimize.steps': 10}} (dotted keys kept dotted)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        dotted, value = parse_override(item)
        section, _, key = dotted.partition(".")
        if not key:
            raise StageError(f"--set {item!r}: the key must start with a stage, e.g. nerf_sds.optimize.steps=100")
        out.setdefault(section, {})[key] = value
    return out


def input_folders(items: list[str] | None, **options: Path | None) -> dict[str, str]:
    """--input NAME=DIR items and the dedicated options (--prior ...) -> {name: dir}."""
    out = {name: str(path) for name, path in options.items() if path is not None}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise StageError(f"bad --input {item!r}: expected NAME=DIR, e.g. --input depth_prior=/path/to/sd2-depth")
        out[name.strip()] = path.strip()
    return out


def check_inputs_for(method: Method, given: dict[str, str]) -> None:
    """One line naming the option when an input folder is given that the method does not take."""
    for name in given:
        if name not in method.input_names:
            takers = [m.name for m in methods().values() if name in m.input_names]
            option = next((i.option for m in methods().values() for i in m.inputs if i.name == name and i.option),
                          f"--input {name}")
            raise StageError(f"{option} is for --method {' or '.join(takers) or '(none)'}, not {method.name} "
                             f"({method.name} takes: {', '.join(method.input_names)})")


def check_device(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise StageError(f"--device must be cpu or cuda, not {device!r}")


class _NoPrefectErrors(logging.Filter):
    """Prefect logs a failing task with its traceback; the CLI reports the error itself (one line for user
    errors, a traceback for bugs). The records still reach Prefect's API (and UI, with a server)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("prefect") and record.levelno >= logging.ERROR)


def quiet_prefect_errors() -> None:
    """Keep Prefect's per-task error tracebacks off the console (call once Prefect is imported)."""
    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.addFilter(_NoPrefectErrors())


@app.command()
@friendly
def generate(
    prompt: Annotated[str, typer.Option(help="text prompt, e.g. 'a red cube'")],
    out: Annotated[Path, typer.Option(help="output directory (mesh.glb, turntable.gif, views.png, manifest.json)")],
    method: Annotated[str, typer.Option(help=f"one of: {METHOD_NAMES}")] = "dreamfusion",
    steps: StepsOption = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    device: DeviceOption = "cpu",
    guidance_scale: Annotated[Optional[float], typer.Option(help="CFG weight of the method's guidance "
                                                            "(`distill3d methods` lists which stage)")] = None,
    prior: PriorOption = None,
    depth_prior: Annotated[Optional[Path], typer.Option(help="textmesh: a local Stable Diffusion 2 depth folder "
                                                        "(diffusers layout) that makes the pseudo ground truth "
                                                        "from the canonical views and their depth")] = None,
    fine_prior: Annotated[Optional[Path], typer.Option(help="magic3d: the refine stage's higher-resolution prior "
                                                       "(default: params.yaml's prior.latent_path)")] = None,
    input_: InputOption = None,
    params: ParamsOption = None,
    set_: SetOption = None,
    from_stage: Annotated[Optional[str], typer.Option(help="re-run this stage and all after it even if cached "
                                                      "(e.g. extract_mesh); earlier stages are reused")] = None,
    init_from: Annotated[Optional[str], typer.Option(help="seed the chain from an earlier run: a generate output "
                                                     "dir, a stage output dir or a stage key (textmesh)")] = None,
    init_mode: Annotated[str, typer.Option(help="with --init-from: 'refine' reuses its geometry, 'sdf' starts "
                                           "the SDF from its mesh")] = "refine",
) -> None:
    """Generate a 3D asset from a prompt; stages already computed for the same inputs are reused."""
    check_device(device)
    spec = get_method(method)
    overrides = merge_sections(spec.shortcut_overrides(steps, guidance_scale), section_overrides(set_ or []))
    inputs = input_folders(input_, prior=prior, depth_prior=depth_prior, fine_prior=fine_prior)
    check_inputs_for(spec, inputs)
    provided: dict[str, str] = {}
    if init_from is not None:
        from flows.init import init_artifacts

        for name, path in init_artifacts(init_from, init_mode).items():
            (inputs if name in spec.input_names else provided)[name] = path
    pfile = params or default_params_file()
    request = AssetRequest(prompt=prompt, out=str(out), method=method, seed=seed, params=overrides, inputs=inputs,
                           device=device, params_file=str(pfile) if pfile else None, provided=provided,
                           from_stage=from_stage)
    planned = plan_request(request)  # validates everything; no Prefect
    if not planned.complete or from_stage:
        importlib.import_module(f"flows.{method}")  # imports Prefect
        quiet_prefect_errors()
    result = make_asset(request, planned)
    how = "cached" if result["cached"] else f"done (from {from_stage})" if from_stage else "done"
    typer.echo(f"{how}: {out}", err=True)


@app.command("methods")
def list_methods() -> None:
    """List the methods: their paper, steps (what each does) and input folders."""
    for spec in methods().values():
        typer.echo(f"{spec.name}: {spec.title}: {spec.summary}")
        for i, step in enumerate(spec.steps, 1):
            typer.echo(f"  {i}. {step.name:<24} {step.doc}")
        typer.echo(f"  --steps sets {', '.join(spec.steps_param)}; --guidance-scale sets {', '.join(spec.guidance_param)}")
        for i in spec.inputs:
            how = i.option or f"--input {i.name}=DIR"
            typer.echo(f"  input {i.name} ({how}{', default ' + i.default if i.default else ', optional'}): {i.doc}")


@app.command()
@friendly
def batch(
    prompts: Annotated[Path, typer.Option(help="prompt source: a .txt or .csv file, or a folder of them; rows may "
                                          "set method=, seed=, name= and STAGE.key=value (flows/prompts_source.py)")],
    out: Annotated[Path, typer.Option(help="output folder: one asset folder per prompt + index.html gallery")],
    method: Annotated[str, typer.Option(help=f"default method of the rows: {METHOD_NAMES}")] = "dreamfusion",
    concurrency: Annotated[int, typer.Option(min=1, help="prompts generated at once (>1: a process each, or "
                                             "flow runs on the work pool with --deployment)")] = 1,
    steps: StepsOption = None,
    seed: Annotated[int, typer.Option(help="default seed of the rows")] = 0,
    device: DeviceOption = "cpu",
    prior: PriorOption = None,
    input_: InputOption = None,
    params: ParamsOption = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="STAGE.key=value for every row (repeatable)")] = None,
    deployment: Annotated[Optional[str], typer.Option(help="run each prompt as a run of this deployment on the work "
                                                      "pool, e.g. generate-asset/asset (needs PREFECT_API_URL)")] = None,
) -> None:
    """Generate an asset per prompt of a file or folder, then an offline gallery (OUT/index.html).

    A bad prompt fails alone (its reason is in the gallery and OUT/summary.json); exit code 1 if any failed."""
    defaults = _defaults(method, device, prior, input_, params, steps=steps, seed=seed,
                         params_over=section_overrides(set_ or []))
    from flows.launch import run_batch  # runs flows.batch.batch only when something must run

    result = run_batch(prompts, out, defaults, concurrency=concurrency, deployment=deployment,
                       before_flow=quiet_prefect_errors)
    _report_outcome(result, lambda e: f"{e['prompt']}  ({e['source']})", result["gallery"])


def _defaults(method: str, device: str, prior: Path | None, input_: list[str] | None, params: Path | None,
              steps: int | None = None, seed: int = 0, params_over: dict | None = None) -> Defaults:
    """Batch-wide defaults; a missing input folder of the default method is a one-line error before anything."""
    check_device(device)
    spec = get_method(method)
    inputs = input_folders(input_, prior=prior)
    pfile = params or default_params_file()
    resolve_inputs(spec, {k: v for k, v in inputs.items() if k in spec.input_names}, pfile)
    return Defaults(method=method, seed=seed, params=params_over or {}, steps=steps, inputs=inputs, device=device,
                    params_file=str(pfile) if pfile else None)


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


@prior_app.command("convert-mvdream")
@friendly
def convert_mvdream(
    checkpoint: Annotated[Path, typer.Option(help="the released MVDream checkpoint (.pt / .ckpt / .safetensors)")],
    sd_folder: Annotated[Path, typer.Option(help="a local diffusers Stable Diffusion 2.1-base folder (its VAE, "
                                                 "text encoder, tokenizer and scheduler are MVDream's)")],
    out: Annotated[Path, typer.Option(help="the prior folder to write (give it to --prior of the mvdream method)")],
    model: Annotated[str, typer.Option(help="MVDream's model name (its UNet sizes)")] = "sd-v2.1-base-4view",
    copy: Annotated[bool, typer.Option(help="copy the SD parts instead of linking them")] = False,
) -> None:
    """Convert the released MVDream weights (LDM layout) into a diffusers multi-view prior folder."""
    from distill3d.priors.mvdream import convert_mvdream_checkpoint

    if not checkpoint.is_file():
        raise fail(f"no checkpoint at {checkpoint}: give the released MVDream .pt/.ckpt file with --checkpoint")
    if out.exists():
        raise fail(f"{out} exists: give --out a new folder (or delete it)")
    convert_mvdream_checkpoint(checkpoint, sd_folder, out, model=model, link=not copy)
    typer.echo(f"wrote {out}: distill3d generate --method mvdream --prior {out} --device cuda ...", err=True)


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
    methods_: Annotated[str, typer.Option("--methods", help="comma-separated methods, e.g. dreamfusion,textmesh")
                        ] = "dreamfusion",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds, e.g. 0,1")] = "0",
    steps: StepsOption = None,
    device: DeviceOption = "cpu",
    prior: PriorOption = None,
    input_: InputOption = None,
    params: ParamsOption = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="STAGE.key=value, applied to the methods that "
                                                      "have STAGE (repeatable)")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="items generated at once (>1: a process each)")] = 1,
    title: Annotated[str, typer.Option(help="report title")] = "distill3d comparison",
) -> None:
    """Compare methods over prompts (and seeds): an asset each (cached ones reused), then an offline report with
    the turntables side by side and the metrics tables (OUT/index.html, OUT/report.md, OUT/metrics.json)."""
    from flows.comparison import check_methods
    from flows.launch import run_compare  # starts Prefect only when something must run

    method_list = check_methods(_split_list(methods_, str, "--methods"))
    seed_list = _split_list(seeds, int, "--seeds")
    defaults = _defaults(method_list[0], device, prior, input_, params, steps=steps)
    _report_outcome(run_compare(prompts, out, methods=method_list, seeds=seed_list, defaults=defaults,
                                params=section_overrides(set_ or []), concurrency=concurrency, title=title,
                                before_flow=quiet_prefect_errors))


@app.command()
@friendly
def sweep(
    prompt: Annotated[str, typer.Option(help="text prompt, e.g. 'a red cube'")],
    out: Annotated[Path, typer.Option(help="report folder: sweep_grid.png, sweep_plot.png, sweep.json, index.html")],
    guidance_scales: Annotated[str, typer.Option(help="comma-separated CFG weights")] = "5,10,30,100",
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0,1",
    method: Annotated[str, typer.Option(help=f"one of: {METHOD_NAMES}")] = "dreamfusion",
    steps: StepsOption = None,
    device: DeviceOption = "cpu",
    prior: PriorOption = None,
    input_: InputOption = None,
    params: ParamsOption = None,
    set_: SetOption = None,
    concurrency: Annotated[int, typer.Option(min=1, help="points generated at once (>1: a process each)")] = 1,
) -> None:
    """Guidance sweep (DreamFusion Fig. 9): generate over guidance scales x seeds (each point a cached generate),
    then the grid of final renders, the saturation/IoU vs guidance plot and a report page."""
    from flows.launch import run_sweep  # starts Prefect only when something must run

    scales = _split_list(guidance_scales, float, "--guidance-scales")
    seed_list = _split_list(seeds, int, "--seeds")
    defaults = _defaults(method, device, prior, input_, params, steps=steps)
    result = run_sweep(prompt, out, guidance_scales=scales, seeds=seed_list, defaults=defaults, method=method,
                       params=section_overrides(set_ or []), concurrency=concurrency, before_flow=quiet_prefect_errors)
    s = result["sweep"]
    for row in s["by_scale"]:
        typer.echo(f"w={row['guidance_scale']:g}: saturation {row['saturation']}, IoU {row['iou_mean']}", err=True)
    _report_outcome(result)


def main() -> None:  # pragma: no cover
    """The `distill3d` command (the console script): the app, then ``exit_process`` (no interpreter teardown)."""
    try:
        app()
    except SystemExit as exc:
        exit_process(exc.code)
    exit_process(0)


if __name__ == "__main__":  # pragma: no cover
    main()
