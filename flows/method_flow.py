"""Every method's Prefect flow, derived from its definition (flows/methods.py): the steps of the resolved chain
(flows/plan.py) run in order as cached tasks (tasks/stage_task.py), each task's cache key its stage key.

    flows/dreamfusion.py:   dreamfusion = method_flow(DREAMFUSION)     (and likewise for every method)

A flow run returns {step: output dir} and publishes a Prefect markdown artifact with the chain's outputs and the
asset's views. `from_stage` re-runs that step and every step after it even when cached (earlier ones are reused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tasks  # noqa: F401  (sets Prefect's environment before prefect is imported)
from flows.method_spec import Method
from flows.plan import check_from_stage, default_params_file, resolve_chain
from prefect import Flow, flow
from tasks.artifacts import publish_outputs
from tasks.stage_task import stage_task


def run_chain(method: Method, prompt: str, *, inputs: dict[str, str] | None = None, params: dict | None = None,
              seed: int = 0, device: str = "cpu", params_file: str | None = None, retries: int = 0,
              provided: dict[str, str] | None = None, from_stage: str | None = None) -> dict[str, str]:
    """Run `method`'s chain for one prompt as tasks (inside a flow); returns {step: output dir}."""
    pfile = Path(params_file) if params_file else default_params_file()
    chain = resolve_chain(method, prompt, inputs=inputs, overrides=params, seed=seed, device=device,
                          params_file=pfile, provided=provided)
    if from_stage:
        check_from_stage(chain, from_stage)
    outputs: dict[str, str] = {}
    forced = False
    for link in chain.links:
        forced = forced or link.step.name == from_stage
        wired = {k: str(v) for k, v in chain.wire(link, outputs).items()}
        run = stage_task(link.module, retries=retries)
        outputs[link.step.name] = run(params=link.params.model_dump(mode="json"), inputs=wired, force=forced)
    asset = next((outputs[s.name] for s in method.steps if s.role == "asset" and s.name in outputs), None)
    publish_outputs(f"{method.name}: {prompt}", outputs, image=Path(asset) / "views.png" if asset else None,
                    key=f"{method.name}-{prompt}")
    return outputs


def method_flow(method: Method) -> Flow:
    """The Prefect flow of `method` (named after it), for a module-level name a deployment can point at."""

    def run(prompt: str, prior: str | None = None, params: dict | None = None, seed: int = 0, device: str = "cpu",
            params_file: str | None = None, retries: int = 0, inputs: dict[str, str] | None = None,
            provided: dict[str, str] | None = None, from_stage: str | None = None) -> dict[str, Any]:
        given = dict(inputs or {})
        if prior is not None:
            given["prior"] = prior
        return run_chain(method, prompt, inputs=given, params=params, seed=seed, device=device,
                         params_file=params_file, retries=retries, provided=provided, from_stage=from_stage)

    run.__name__ = run.__qualname__ = method.name
    run.__doc__ = (f"{method.title}: {method.summary}. Returns {{step: output dir}}.\n\n"
                   "`params` overrides params.yaml per stage ({stage: {dotted.key: value}}); `inputs` gives the "
                   "method's input folders by name (`prior` is a shortcut for inputs['prior']); `provided` "
                   "supplies outputs of its replaceable steps by role (--init-from); `from_stage` re-runs that "
                   "step and every later one.")
    return flow(run, name=method.name, description=f"{method.title}: {method.summary}")
