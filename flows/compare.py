"""The `compare` and `sweep` flows: methods x prompts x seeds, and a guidance sweep (DreamFusion Fig. 9), as reports.

Each item is a `generate-asset` run of flows/batch.py (cached stages reused; `run_pending` runs the rest as
subflows, or one process each with concurrency > 1); the report (offline HTML + Markdown + metrics.json, and for the
sweep the grid and plot PNGs) is written by flows/comparison.py and published as a Prefect markdown artifact.
`distill3d compare` / `distill3d sweep` go through flows/launch.py, which skips Prefect altogether when every item
is already in the store.

    distill3d compare --methods dreamfusion,textmesh --prompts prompts.txt --seeds 0,1 --out out/compare
    distill3d sweep --prompt "a red cube" --guidance-scales 5,10,30,100 --seeds 0,1 --out out/sweep
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tasks  # noqa: F401  (sets Prefect's environment before prefect is imported)
from flows.batch import run_pending
from flows.comparison import compare_rows, finish_compare, finish_sweep, prepare_items, sweep_rows
from flows.jobs import Defaults
from flows.prompts_source import PromptRow
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from tasks.artifacts import artifact_key


def _run_and_publish(rows: list[PromptRow], kind: str, out: str, defaults: Defaults, concurrency: int,
                     title: str) -> dict[str, Any]:
    """Prepare the rows' items, run the missing ones, write the report, publish its tables."""
    logger = get_run_logger()
    out_dir = Path(out).resolve()
    entries, pending = prepare_items(rows, out_dir, defaults)
    logger.info("%s: %d items, %d cached, %d invalid, %d to run", kind, len(entries),
                sum(e["status"] == "cached" for e in entries), sum(e["status"] == "failed" for e in entries),
                len(pending))
    run_pending(pending, concurrency=concurrency)
    result = (finish_sweep if kind == "sweep" else finish_compare)(entries, out_dir, title)
    md = [ln for ln in (out_dir / "report.md").read_text().splitlines() if not ln.startswith("![")]
    create_markdown_artifact(markdown="\n".join(md) + f"\n\nReport: `{result['report']}`\n",
                             key=artifact_key(f"{kind}-{out_dir.name}"), description=f"distill3d {kind} -> {out_dir}")
    logger.info("%s: %d ok, %d failed -> %s", kind, result["ok"], result["failed"], result["report"])
    return result


@flow(name="compare")
def compare(prompts: str, out: str, methods: list[str] = ["dreamfusion"], seeds: list[int] = [0],  # noqa: B006
            params: dict | None = None, steps: int | None = None, inputs: dict[str, str] | None = None,
            device: str = "cpu", params_file: str | None = None, concurrency: int = 1,
            title: str = "distill3d comparison") -> dict:
    """Every (prompt of `prompts`, method, seed) -> out/runs/<name>/, then out/index.html, out/report.md,
    out/metrics.json and a Prefect markdown artifact. Returns {ok, failed, report, entries}."""
    rows = compare_rows(prompts, methods, seeds, params)
    defaults = Defaults(steps=steps, inputs=inputs or {}, device=device, params_file=params_file)
    return _run_and_publish(rows, "compare", out, defaults, concurrency, title)


@flow(name="sweep")
def sweep(prompt: str, out: str, guidance_scales: list[float] = [5.0, 10.0, 30.0, 100.0],  # noqa: B006
          seeds: list[int] = [0, 1], method: str = "dreamfusion", params: dict | None = None,  # noqa: B006
          steps: int | None = None, inputs: dict[str, str] | None = None, device: str = "cpu",
          params_file: str | None = None, concurrency: int = 1, title: str | None = None) -> dict:
    """Guidance sweep (DreamFusion Fig. 9): every (guidance scale, seed) -> out/runs/w<scale>-s<seed>/, then
    out/sweep_grid.png, out/sweep_plot.png, out/sweep.json and the report page (index.html, report.md)."""
    rows = sweep_rows(prompt, guidance_scales, seeds, method, params)
    defaults = Defaults(steps=steps, inputs=inputs or {}, device=device, params_file=params_file)
    return _run_and_publish(rows, "sweep", out, defaults, concurrency, title or f"guidance sweep: {prompt}")
