"""Batch generation as Prefect flows: one asset per prompt, locally or fanned out over a work pool's workers.

    batch(prompts, out):
      1. read the prompt source (flows/prompts_source.py): one row per prompt, each with optional method, seed and
         param overrides; check every row without running anything (flows/jobs.py: a bad row fails alone) and
         assemble the rows whose stages are all in the store
      2. every other row: a `generate-asset` flow run, at most `concurrency` at a time
           deployment set (e.g. "generate-asset/asset"): `run_deployment`, picked up by any worker of the pool,
                                                         on this machine or others (shared filesystem for `out`)
           no deployment, concurrency 1:                 a subflow in this process
           no deployment, concurrency > 1:               a subprocess per prompt (`python -m flows.batch`)
      3. out/index.html (gallery), out/summary.json, and a Prefect markdown artifact with every outcome

`generate_asset` is the per-prompt unit: `flows.asset.make_asset` (what `distill3d generate` runs too) as a flow.
Deploy with `prefect deploy --all` (see prefect.yaml and the README).
"""

from __future__ import annotations

import contextvars
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tasks  # noqa: F401  (sets Prefect's environment before prefect is imported)
from distill3d.report.gallery import summary_markdown, write_gallery
from flows.asset import AssetRequest, make_asset, read_asset_manifest
from flows.jobs import Defaults, prepare, summarise
from flows.prompts_source import read_prompts
from flows.threads import worker_env
from prefect import flow, get_run_logger
from stages.core.protocol import StageError
from tasks.artifacts import artifact_key


@flow(name="generate-asset")
def generate_asset(prompt: str, out: str, method: str = "dreamfusion", seed: int = 0, params: dict | None = None,
                   inputs: dict[str, str] | None = None, prior: str | None = None, device: str = "cpu",
                   params_file: str | None = None, provided: dict[str, str] | None = None,
                   from_stage: str | None = None) -> dict[str, Any]:
    """One prompt -> `out/` (mesh.glb, turntable.gif, views.png, manifest.json[, metrics.json]); cached stages
    reused; `from_stage` forces that stage and all after it to run again. Returns {out, cached, seconds}.
    `prior` is a shortcut for inputs["prior"]."""
    given = dict(inputs or {})
    if prior is not None:
        given["prior"] = prior
    request = AssetRequest(prompt=prompt, out=out, method=method, seed=seed, params=params or {}, inputs=given,
                           device=device, params_file=params_file, provided=provided or {}, from_stage=from_stage)
    return make_asset(request)


def _reason(message: str | None) -> str:
    text = " ".join(str(message or "unknown error").split())
    for prefix in ("Flow run encountered an exception:", "Task run encountered an exception:"):
        text = text.replace(prefix, "").strip()
    return text


def _finish(entry: dict, ok: bool, reason: str | None, seconds: float) -> None:
    if ok and read_asset_manifest(Path(entry["out"])) is None:
        ok, reason = False, f"the run ended without an asset at {entry['out']}"
    entry.update(status="ok" if ok else "failed", reason=None if ok else _reason(reason), seconds=round(seconds, 3))


def _run_via_deployment(entry: dict, deployment: str) -> None:
    from prefect.deployments import run_deployment

    t0 = time.perf_counter()
    try:
        run = run_deployment(deployment, parameters=entry["request"], timeout=None, poll_interval=2,
                             flow_run_name=f"asset-{entry['name']}"[:60])
        state = run.state
        _finish(entry, bool(state and state.is_completed()), state.message if state else "no state",
                time.perf_counter() - t0)
    except Exception as exc:  # the deployment is missing, the API is down, ...: this prompt fails, not the batch
        _finish(entry, False, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)


def _run_as_subprocess(entry: dict, concurrency: int) -> None:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "flows.batch", json.dumps(entry["request"])], capture_output=True,
                       text=True, cwd=Path.cwd(), env=worker_env(concurrency, keep_explicit=True))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    reason = next((ln[len("error: "):] for ln in reversed(lines) if ln.startswith("error: ")), None)
    _finish(entry, r.returncode == 0, reason or (lines[-1] if lines else f"exit code {r.returncode}"),
            time.perf_counter() - t0)


def _run_as_subflow(entry: dict) -> None:
    t0 = time.perf_counter()
    state = generate_asset.with_options(flow_run_name=f"asset-{entry['name']}"[:60])(**entry["request"],
                                                                                      return_state=True)
    _finish(entry, state.is_completed(), state.message, time.perf_counter() - t0)


def run_pending(pending: list[dict], *, concurrency: int, deployment: str | None = None) -> None:
    """Make each pending entry's asset (a `generate-asset` run each, at most `concurrency` at once) and record its
    outcome in the entry."""
    if not pending:
        return
    if deployment:
        run_one = lambda e: _run_via_deployment(e, deployment)  # noqa: E731
    elif concurrency <= 1:
        for entry in pending:
            _run_as_subflow(entry)
        return
    else:
        run_one = lambda e: _run_as_subprocess(e, concurrency)  # noqa: E731
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="batch") as pool:
        # each thread gets a copy of the flow's context, so deployment runs are linked to this flow run
        futures = [pool.submit(contextvars.copy_context().run, run_one, e) for e in pending]
        for future in futures:
            future.result()


def publish_summary(entries: list[dict], title: str, key: str, page: Path) -> None:
    """A Prefect markdown artifact with every entry's outcome and the page written."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=summary_markdown(entries, title) + f"\nPage: `{page}`\n",
                             key=artifact_key(key), description=f"distill3d {title} -> {page}")


@flow(name="batch")
def batch(prompts: str, out: str = "out/batch", method: str = "dreamfusion", seed: int = 0,
          params: dict | None = None, steps: int | None = None, inputs: dict[str, str] | None = None,
          device: str = "cpu", params_file: str | None = None, concurrency: int = 2,
          deployment: str | None = None) -> dict[str, Any]:
    """Generate an asset per prompt of `prompts` (a .txt/.csv file or a folder) into `out/<name>/`, then write
    `out/index.html` and `out/summary.json` and a Prefect artifact. Bad prompts fail alone.

    `params` ({stage: {dotted.key: value}}) and `steps` (each row's method's optimisation steps) apply to every
    row (a row's own overrides win); `inputs` gives input folders by name (e.g. {"prior": dir}). `deployment`
    (e.g. "generate-asset/asset") sends each prompt to the work pool; without it prompts run here (`concurrency` >
    1: one subprocess each). Returns {ok, failed, gallery, entries}.
    """
    logger = get_run_logger()
    out_dir = Path(out).resolve()
    defaults = Defaults(method=method, seed=seed, params=params or {}, steps=steps, inputs=inputs or {},
                        device=device, params_file=params_file)
    entries, pending = prepare(read_prompts(prompts), out_dir, defaults)
    logger.info("batch: %d prompts, %d cached, %d invalid, %d to run (concurrency %d, %s)", len(entries),
                sum(e["status"] == "cached" for e in entries), sum(e["status"] == "failed" for e in entries),
                len(pending), concurrency, f"deployment {deployment}" if deployment else "local")
    run_pending(pending, concurrency=concurrency, deployment=deployment)
    gallery = write_gallery(entries, out_dir)
    publish_summary(entries, f"batch {out_dir.name}", f"batch-{out_dir.name}", gallery)
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
