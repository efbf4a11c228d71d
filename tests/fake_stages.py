"""Fake nerf_sds / extract_mesh / bake_texture / export_asset / evaluate stages for testing the plumbing (no torch,
~ms each).

`register()` installs them through the stage registry (stages.core.protocol.register_stage); every run is appended to
$FAKE_STAGE_LOG so tests can tell runs from cache hits, also across processes.
"""

from __future__ import annotations

import json
import os
import struct
import types
import zlib
from pathlib import Path

from pydantic import BaseModel, Field

from stages.core.protocol import StageParams, register_stage, unregister_stage
from stages.core.store import work_dir

NAMES = ("nerf_sds", "extract_mesh", "bake_texture", "export_asset", "evaluate")


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\xff\0\0")) + chunk(b"IEND", b"")


PNG_1x1 = _png_1x1()


def _log(name: str) -> None:
    if os.environ.get("FAKE_STAGE_LOG"):
        with open(os.environ["FAKE_STAGE_LOG"], "a") as f:
            f.write(name + "\n")


class Optimize(BaseModel):
    model_config = {"extra": "forbid"}
    steps: int = Field(10, ge=1)


class NerfParams(StageParams):
    prompt: str = ""
    seed: int = 0
    device: str = "cpu"
    optimize: Optimize = Optimize()


def nerf_check(params, inputs):
    from distill3d.toyworld.vocab import check_prompt

    check_prompt(params.prompt)  # PromptError (a ValueError) before anything runs


def nerf_run(params, inputs, out: Path):
    _log("nerf_sds")
    work = work_dir("nerf_sds", params, inputs)  # checkpoints for resume live here until the output is complete
    (work / "checkpoint.txt").write_text("step 5")
    (out / "nerf.json").write_text(json.dumps({"prompt": params.prompt, "seed": params.seed, "steps": params.optimize.steps}))
    return {"loss": 0.1}


class MeshParams(StageParams):
    resolution: int = 32


def mesh_run(params, inputs, out: Path):
    _log("extract_mesh")
    (out / "mesh.obj").write_text((inputs["nerf"] / "nerf.json").read_text() + str(params.resolution))
    return {}


class BakeParams(StageParams):
    texture_size: int = 64


def bake_run(params, inputs, out: Path):
    _log("bake_texture")
    (out / "mesh.obj").write_text((inputs["mesh"] / "mesh.obj").read_text() + f" texture {params.texture_size}")
    return {}


class ExportParams(StageParams):
    turntable_frames: int = 4


def export_run(params, inputs, out: Path):
    _log("export_asset")
    (out / "mesh.glb").write_bytes(b"glTF" + (inputs["mesh"] / "mesh.obj").read_bytes())
    (out / "turntable.gif").write_bytes(b"GIF89a")
    (out / "views.png").write_bytes(PNG_1x1)
    return {}


class EvalParams(StageParams):
    prompt: str = ""


def eval_run(params, inputs, out: Path):
    _log("evaluate")
    (out / "metrics.json").write_text(json.dumps({"iou": 0.9, "prompt": params.prompt}))
    return {"iou": 0.9}


def _module(name, inputs, params, run, check=None, artifact=None) -> types.ModuleType:
    m = types.ModuleType(f"fake_stages.{name}")
    m.__file__ = __file__  # code_version hashes this file
    m.NAME, m.INPUTS, m.Params, m.run = name, inputs, params, run
    if artifact:
        m.ARTIFACT = artifact
    if check:
        m.check = check
    return m


MODULES = {
    "nerf_sds": _module("nerf_sds", ("prior",), NerfParams, nerf_run, nerf_check),
    "extract_mesh": _module("extract_mesh", ("nerf",), MeshParams, mesh_run),
    "bake_texture": _module("bake_texture", ("mesh", "nerf"), BakeParams, bake_run, artifact="mesh"),
    "export_asset": _module("export_asset", ("mesh",), ExportParams, export_run),
    "evaluate": _module("evaluate", ("asset",), EvalParams, eval_run),
}


def register() -> None:
    for module in MODULES.values():
        register_stage(module)


def unregister() -> None:
    for name in NAMES:
        unregister_stage(name)


def runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def fill_store(prompt: str, prior: Path, method: str = "dreamfusion", **request) -> dict[str, str]:
    """Run every stage of `method`'s chain for `prompt` into the store without Prefect, as a first run would;
    returns {step: output dir}."""
    from flows.plan import plan, resolve_chain
    from stages.core.execute import execute

    chain = resolve_chain(method, prompt, inputs={"prior": prior}, **request)
    while not (planned := plan(chain)).complete:
        step = next(s for s in planned.steps if not s.complete)
        execute(step.link.module, step.link.params, step.inputs, step.out)
    return planned.outputs


def register_method() -> None:
    """Register "tinymethod": a method made of existing (here: fake) stages, defined once."""
    from flows.method_spec import Method, Step
    from flows.methods import PRIOR, register_method as register

    register(Method(
        name="tinymethod", title="A test method", summary="a field, its mesh exported as it is", inputs=(PRIOR,),
        steps=(Step("nerf_sds", {"prior": "prior"}, "field", "optimise a field"),
               Step("extract_mesh", {"nerf": "nerf_sds"}, "mesh", "mesh it"),
               Step("export_asset", {"mesh": "extract_mesh"}, "asset", "export the mesh"),
               Step("evaluate", {"asset": "export_asset"}, "metrics", "score it", toy_only=True, output="metrics")),
        steps_param=("nerf_sds.optimize.steps",), guidance_param=()))


def unregister_method() -> None:
    from flows.methods import unregister_method as unregister

    unregister("tinymethod")
