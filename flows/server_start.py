"""Start Prefect's temporary server ahead of a flow run, importing meanwhile the code its stages import when they run.

A flow run without a Prefect server (``PREFECT_API_URL`` unset: ephemeral mode, the default here) first starts
Prefect's temporary server, a subprocess that answers after ~3.5-4 s while this process waits for it, idle; then the
first stage that loads a prior imports diffusers' models (~3.5 s: they pull in torch._dynamo, peft and transformers).
``start_server(plan)`` does the two at once, on the two cores: this thread starts the server (Prefect's own
``SubprocessASGIServer``, the singleton its client would start and then finds running) while a helper thread
imports: `distill3d generate` 1-2.5 s sooner (3-step runs, the two ways alternated: 17.0 / 17.8 -> 16.0 / 15.3 s;
importing Prefect's server module, ~2.5 s, stays before the start). The helper imports only while this
thread waits: two threads importing at once are slower than one after the other (the GIL: 10-11 s against 8.7 s for
Prefect's server module and diffusers' UNet). It imports only when this call starts the server, in a process
where nothing else runs yet, and is joined before the flow: diffusers' lazy module is not safe to import from two
threads at once (an earlier attempt that imported while a batch's stages ran failed with "cannot import name
'DDPMScheduler'"); in a batch the server is up before its flows run, so nothing is imported ahead there.

Anything unexpected (another Prefect version, a server that fails to start) leaves it to Prefect, which starts its
server as usual (and reports its own error) at the flow's first call.
"""

from __future__ import annotations

import importlib
import logging
import threading

from flows.plan import Plan
from stages.core.protocol import all_inputs

log = logging.getLogger(__name__)

# Every prior backend (toy, multi-view, Stable Diffusion, IF, MVDream) builds on diffusers' UNet2DConditionModel.
PRIOR_CODE = ("diffusers.models.unets.unet_2d_condition",)


def modules_to_import(planned: Plan, from_stage: str | None = None) -> tuple[str, ...]:
    """The slow imports of the steps that will run (those not in the store, and ``from_stage`` and every step after
    it): a stage taking a prior input imports the prior's code."""
    names = planned.names()
    first = names.index(from_stage) if from_stage in names else len(names)
    runs = [s for i, s in enumerate(planned.steps) if i >= first or not s.complete]
    takes_prior = any("prior" in name for s in runs for name in all_inputs(s.link.module))
    return PRIOR_CODE if takes_prior else ()


def _import_all(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the stage imports it again and reports the error itself
            log.debug("pre-import of %s failed: %s", name, exc)


def start_server(planned: Plan, from_stage: str | None = None) -> None:
    """Start Prefect's temporary server when the flow will need one, importing ``modules_to_import(...)``
    meanwhile. Returns once the server answers (or at once: a configured server, another Prefect)."""
    try:
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        if settings.api.url or not settings.server.ephemeral.enabled:
            return  # a real server (or none allowed): nothing to start
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
    except Exception as exc:  # noqa: BLE001 - another Prefect: it starts its server itself
        log.debug("not starting Prefect's server ahead: %s", exc)
        return
    if server.running:
        return  # started already (a batch's flow): other threads may be running stages, importing diffusers
    helper = threading.Thread(target=_import_all, args=(modules_to_import(planned, from_stage),),
                              name="distill3d-imports", daemon=True)
    helper.start()
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - Prefect starts (or fails to start) it again, with its own error
        log.debug("Prefect's temporary server did not start ahead: %s", exc)
    helper.join()
