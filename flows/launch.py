"""What the CLI's batch, compare and sweep commands run: when every item is already in the store, assemble the
assets and write the page without starting Prefect (a cached batch costs about a second); otherwise run the
Prefect flow (flows/batch.py, flows/compare.py), which makes the missing items and writes the same page."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distill3d.report.gallery import write_gallery
from flows.comparison import compare_rows, finish_compare, finish_sweep, prepare_items, sweep_rows
from flows.jobs import Defaults, prepare, summarise
from flows.prompts_source import read_prompts


Hook = Callable[[], None] | None  # called once Prefect is imported, right before a flow runs (the CLI quiets logs)


def _flow_kwargs(defaults: Defaults) -> dict[str, Any]:
    return {"steps": defaults.steps, "inputs": defaults.inputs or None, "device": defaults.device,
            "params_file": defaults.params_file}


def run_batch(prompts: str | Path, out: str | Path, defaults: Defaults, *, concurrency: int = 1,
              deployment: str | None = None, before_flow: Hook = None) -> dict[str, Any]:
    """`distill3d batch`: an asset per prompt row, then out/index.html (the gallery) and out/summary.json."""
    out_dir = Path(out).resolve()
    rows = read_prompts(prompts)  # StageError for an unusable source, before anything else
    entries, pending = prepare(rows, out_dir, defaults)
    if not pending:
        return summarise(entries, write_gallery(entries, out_dir))
    from flows.batch import batch  # imports prefect

    if before_flow:
        before_flow()
    return batch(prompts=str(Path(prompts).resolve()), out=str(out_dir), method=defaults.method, seed=defaults.seed,
                 params=defaults.params or None, concurrency=concurrency, deployment=deployment,
                 **_flow_kwargs(defaults))


def run_compare(prompts: str | Path, out: str | Path, *, methods: Sequence[str], seeds: Sequence[int],
                defaults: Defaults, params: dict | None = None, concurrency: int = 1,
                title: str = "distill3d comparison", before_flow: Hook = None) -> dict[str, Any]:
    """`distill3d compare`: methods x prompts x seeds, then the comparison report."""
    out_dir = Path(out).resolve()
    entries, pending = prepare_items(compare_rows(prompts, methods, seeds, params), out_dir, defaults)
    if not pending:
        return finish_compare(entries, out_dir, title)
    from flows.compare import compare  # imports prefect

    if before_flow:
        before_flow()
    return compare(prompts=str(Path(prompts).resolve()), out=str(out_dir), methods=list(methods),
                   seeds=[int(s) for s in seeds], params=params, concurrency=concurrency, title=title,
                   **_flow_kwargs(defaults))


def run_sweep(prompt: str, out: str | Path, *, guidance_scales: Sequence[float], seeds: Sequence[int],
              defaults: Defaults, method: str = "dreamfusion", params: dict | None = None, concurrency: int = 1,
              title: str | None = None, before_flow: Hook = None) -> dict[str, Any]:
    """`distill3d sweep`: guidance scales x seeds of one prompt, then the sweep figure and report."""
    out_dir = Path(out).resolve()
    rows = sweep_rows(prompt, guidance_scales, seeds, method, params)
    entries, pending = prepare_items(rows, out_dir, defaults)
    title = title or f"guidance sweep: {prompt}"
    if not pending:
        return finish_sweep(entries, out_dir, title)
    from flows.compare import sweep  # imports prefect

    if before_flow:
        before_flow()
    return sweep(prompt=prompt, out=str(out_dir), guidance_scales=[float(g) for g in guidance_scales],
                 seeds=[int(s) for s in seeds], method=method, params=params, concurrency=concurrency, title=title,
                 **_flow_kwargs(defaults))
