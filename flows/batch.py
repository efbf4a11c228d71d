"""Batch generation: many prompts -> many assets + an offline gallery, locally or fanned out over Prefect workers.

    batch(prompts, out):
      1. read the prompt source (flows/prompts_source.py): one row per prompt, each with optional method, seed and
         param overrides; validate every row's stages and words without running anything (a bad row fails alone)
      2. rows whose stages are all in the store: assemble their asset at once (no flow run)
      3. every other row: a `generate-asset` flow run, at most `concurrency` at a time
           deployment set (e.g. "generate-asset/asset"): `run_deployment`, picked up by any worker of the pool,
                                                         on this machine or others (shared filesystem for `out`)
           no deployment, concurrency 1:                 a subflow in this process
           no deployment, concurrency > 1:               a subprocess per prompt (`python -m flows.batch`)
      4. out/index.html (gallery), out/summary.json, and a Prefect markdown artifact with every outcome

`generate_asset` is the per-prompt unit (also what `distill3d generate` does): plan the method's stages; if all
are cached copy them out, else run the method's flow; `from_stage` forces that stage and the ones after it to
run again (upstream outputs reused). `rerun_from` is that forced part alone, as a flow.

Deploy with `prefect deploy --all` (see prefect.yaml and the README).
"""

from __future__ import annotations

import contextvars
import importlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tasks  # noqa: F401  (sets Prefect's environment before prefect is imported)
from flows.gallery import summary_markdown, write_gallery
from flows.plan import METHODS, Plan, default_params_file, plan
from flows.prompts_source import assemble_asset, prepare, read_manifest_any, read_prompts, summarise
from prefect import flow, get_run_logger
from stages.common import StageError, all_inputs, artifact_name, get_stage

DEFAULT_DEPLOYMENT = "generate-asset/asset"


# ----------------------------------------------------------------------------------------------------------------
# one prompt


def method_flow(method: str):
    """The Prefect flow of a method: `flows/<method>.py`'s function of the same name."""
    if method not in METHODS:
        raise StageError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return getattr(importlib.import_module(f"flows.{method}"), method)


def check_from_stage(planned: Plan, from_stage: str) -> int:
    """Index of `from_stage` among the plan's stages (StageError naming the valid ones)."""
    names = [s.name for s in planned.steps]
    if from_stage not in names:
        raise StageError(f"--from-stage {from_stage!r} is not a stage of {planned.method} for this prompt; "
                         f"choose one of {names}")
    return names.index(from_stage)


def _forced_chain(planned: Plan, from_stage: str, prior: str) -> dict[str, str]:
    """Run the plan's stages from `from_stage` on with force=True (upstream outputs must be complete)."""
    from tasks.stage_task import stage_task

    start = check_from_stage(planned, from_stage)
    available: dict[str, str] = {"prior": str(prior)}
    outputs: dict[str, str] = {}
    for step in planned.steps[:start]:
        module = get_stage(step.name)
        available[artifact_name(module)] = outputs[step.name] = str(step.out)
    for step in planned.steps[start:]:
        module = get_stage(step.name)
        inputs = {n: available[n] for n in all_inputs(module) if n in available}  # optional ones too, as plan()
        out = stage_task(module)(params=step.params.model_dump(mode="json"), inputs=inputs, force=True)
        available[artifact_name(module)] = outputs[step.name] = out
    return outputs


def _rerun(method: str, from_stage: str, prompt: str, prior: str, params: dict | None, seed: int, device: str,
           pfile: Path | None) -> dict[str, str]:
    planned = plan(prompt, prior, params, seed, device, pfile, method)
    start = check_from_stage(planned, from_stage)
    if not all(s.complete for s in planned.steps[:start]):  # upstream first (the method's own flow, cached)
        method_flow(method)(prompt=prompt, prior=str(prior), params=params, seed=seed, device=device,
                            params_file=str(pfile) if pfile else None)
        planned = plan(prompt, prior, params, seed, device, pfile, method)
    return _forced_chain(planned, from_stage, prior)


@flow(name="rerun-from")
def rerun_from(method: str, from_stage: str, prompt: str, prior: str = "models/toy_prior", params: dict | None = None,
               seed: int = 0, device: str = "cpu", params_file: str | None = None) -> dict[str, str]:
    """Re-run `from_stage` and every stage after it (forced, even if cached), reusing the stages before it.
    Returns {stage: output dir} like a method flow."""
    pfile = Path(params_file) if params_file else default_params_file()
    return _rerun(method, from_stage, prompt, prior, params, seed, device, pfile)


@flow(name="generate-asset")
def generate_asset(prompt: str, out: str, method: str = "dreamfusion", seed: int = 0, params: dict | None = None,
                   prior: str = "models/toy_prior", device: str = "cpu", params_file: str | None = None,
                   from_stage: str | None = None) -> dict[str, Any]:
    """One prompt -> `out/` (mesh.glb, turntable.gif, views.png, manifest.json[, metrics.json]).

    Cached stages are reused; `from_stage` forces that stage and all after it to run again. Returns
    {out, cached, seconds}.
    """
    t0 = time.perf_counter()
    pfile = Path(params_file) if params_file else default_params_file()
    planned = plan(prompt, prior, params, seed, device, pfile, method)  # one-line StageError on bad input
    cached = planned.complete and not from_stage
    if from_stage:
        outputs = _rerun(method, from_stage, prompt, prior, params, seed, device, pfile)
    elif cached:
        outputs = planned.outputs
    else:
        outputs = method_flow(method)(prompt=prompt, prior=str(prior), params=params, seed=seed, device=device,
                                      params_file=str(pfile) if pfile else None)
    info = {"method": method, "prompt": prompt, "seed": seed, "device": device, "prior": str(prior),
            "params_file": str(pfile) if pfile else None, "overrides": params or {}, "cached": cached,
            "from_stage": from_stage}
    assemble_asset(outputs, Path(out), info)
    return {"out": str(out), "cached": cached, "seconds": round(time.perf_counter() - t0, 3)}


# ----------------------------------------------------------------------------------------------------------------
# many prompts


def _item_kwargs(entry: dict, prior: str, device: str, params_file: Path | None) -> dict[str, Any]:
    return {"prompt": entry["prompt"], "out": entry["out"], "method": entry["method"], "seed": entry["seed"],
            "params": entry["params"], "prior": str(prior), "device": device,
            "params_file": str(params_file) if params_file else None}


def _reason(message: str | None) -> str:
    text = " ".join(str(message or "unknown error").split())
    for prefix in ("Flow run encountered an exception:", "Task run encountered an exception:"):
        text = text.replace(prefix, "").strip()
    return text


def _finish(entry: dict, ok: bool, reason: str | None, seconds: float) -> None:
    if ok and read_manifest_any(Path(entry["out"])) is None:
        ok, reason = False, f"the run ended without an asset at {entry['out']}"
    entry.update(status="ok" if ok else "failed", reason=None if ok else _reason(reason), seconds=round(seconds, 3))


def _run_via_deployment(entry: dict, deployment: str, kwargs: dict) -> None:
    from prefect.deployments import run_deployment

    t0 = time.perf_counter()
    try:
        run = run_deployment(deployment, parameters=kwargs, timeout=None, poll_interval=2,
                             flow_run_name=f"asset-{entry['name']}"[:60])
        state = run.state
        _finish(entry, bool(state and state.is_completed()), state.message if state else "no state",
                time.perf_counter() - t0)
    except Exception as exc:  # the deployment is missing, the API is down, ...: this prompt fails, not the batch
        _finish(entry, False, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)


def _run_as_subprocess(entry: dict, kwargs: dict) -> None:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "flows.batch", json.dumps(kwargs)], capture_output=True, text=True,
                       cwd=Path.cwd())
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    reason = next((ln[len("error: "):] for ln in reversed(lines) if ln.startswith("error: ")), None)
    _finish(entry, r.returncode == 0, reason or (lines[-1] if lines else f"exit code {r.returncode}"),
            time.perf_counter() - t0)


def _run_as_subflow(entry: dict, kwargs: dict) -> None:
    t0 = time.perf_counter()
    state = generate_asset.with_options(flow_run_name=f"asset-{entry['name']}"[:60])(**kwargs, return_state=True)
    _finish(entry, state.is_completed(), state.message, time.perf_counter() - t0)


def run_pending(pending: list[dict], *, concurrency: int, deployment: str | None, prior: str, device: str,
                params_file: Path | None) -> None:
    """Run each pending entry's `generate-asset` flow (at most `concurrency` at once) and record its outcome."""
    if not pending:
        return
    if deployment:
        run_one = lambda e: _run_via_deployment(e, deployment, _item_kwargs(e, prior, device, params_file))  # noqa: E731
    elif concurrency <= 1:
        for entry in pending:
            _run_as_subflow(entry, _item_kwargs(entry, prior, device, params_file))
        return
    else:
        run_one = lambda e: _run_as_subprocess(e, _item_kwargs(e, prior, device, params_file))  # noqa: E731
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="batch") as pool:
        # each thread gets a copy of the flow's context, so deployment runs are linked to this flow run
        futures = [pool.submit(contextvars.copy_context().run, run_one, e) for e in pending]
        for future in futures:
            future.result()


def _publish(entries: list[dict], out_dir: Path, gallery: Path) -> None:
    from prefect.artifacts import create_markdown_artifact

    from tasks.artifacts import artifact_key

    markdown = summary_markdown(entries, f"batch {out_dir.name}") + f"\nGallery: `{gallery}`\n"
    create_markdown_artifact(markdown=markdown, key=artifact_key(f"batch-{out_dir.name}"),
                             description=f"distill3d batch -> {out_dir}")


@flow(name="batch")
def batch(prompts: str, out: str = "out/batch", method: str = "dreamfusion", seed: int = 0,
          params: dict | None = None, prior: str = "models/toy_prior", device: str = "cpu",
          params_file: str | None = None, concurrency: int = 2, deployment: str | None = None) -> dict[str, Any]:
    """Generate an asset per prompt of `prompts` (a .txt/.csv file or a folder) into `out/<name>/`, then write
    `out/index.html` and `out/summary.json` and a Prefect artifact. Bad prompts fail alone.

    `params` ({stage: {dotted.key: value}}) applies to every row (a row's own overrides win). `deployment` (e.g.
    "generate-asset/asset") sends each prompt to the work pool; without it prompts run here (`concurrency` > 1:
    one subprocess each). Returns {ok, failed, gallery, entries}.
    """
    logger = get_run_logger()
    out_dir = Path(out).resolve()
    pfile = Path(params_file) if params_file else default_params_file()
    rows = read_prompts(prompts)
    entries, pending = prepare(rows, out_dir, method=method, seed=seed, params=params, prior=prior, device=device,
                               params_file=pfile)
    logger.info("batch: %d prompts, %d cached, %d invalid, %d to run (concurrency %d, %s)", len(entries),
                sum(e["status"] == "cached" for e in entries), sum(e["status"] == "failed" for e in entries),
                len(pending), concurrency, f"deployment {deployment}" if deployment else "local")
    run_pending(pending, concurrency=concurrency, deployment=deployment, prior=prior, device=device,
                params_file=pfile)
    gallery = write_gallery(entries, out_dir)
    _publish(entries, out_dir, gallery)
    result = summarise(entries, gallery)
    logger.info("batch: %d ok, %d failed -> %s", result["ok"], result["failed"], gallery)
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.batch '{"prompt": ..., "out": ..., ...}'`: one `generate_asset` run (a batch's subprocess).
    Exit 0 on success; otherwise `error: <reason>` as the last stderr line and exit 1."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        generate_asset(**json.loads(argv[0]))
    except Exception as exc:
        print(f"error: {type(exc).__name__ + ': ' if not isinstance(exc, (StageError, ValueError)) else ''}"
              f"{' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
