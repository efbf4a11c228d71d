"""A method's chain of stages resolved for one prompt, and the all-cached fast path, WITHOUT importing Prefect.

`resolve_chain` turns a `Method` (flows/methods.py) and a request (prompt, the method's input folders, params
overrides, seed, device, outputs supplied by `--init-from`) into the steps to run, each with validated params
(params.yaml section < run-time fields < overrides) and its input wiring. The Prefect flow
(flows/method_flow.py) runs exactly those steps; `plan` walks them without running anything, computes each stage
key and checks the store: when every stage is complete, `distill3d generate` copies the outputs and returns
without starting Prefect (whose temporary server alone costs ~10 s).

Stage modules are imported by name (`stages.core.protocol.get_stage`), so tests can register fake ones. Keep stage
modules cheap to import (torch inside `run`): the fast path imports them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from distill3d.nested import lookup
from flows.method_spec import Method, Step
from flows.methods import get_method
from stages.core.keys import stage_key
from stages.core.params import load_params, read_params_file
from stages.core.protocol import StageError, StageParams, all_inputs, get_stage
from stages.core.store import is_complete, read_manifest, store_dir


def default_params_file() -> Path | None:
    """$DISTILL3D_PARAMS, else ./params.yaml when present, else None (stage defaults)."""
    env = os.environ.get("DISTILL3D_PARAMS")
    if env:
        return Path(env)
    return Path("params.yaml") if Path("params.yaml").is_file() else None


def is_toy_prompt(prompt: str) -> bool:
    """True when the toy world can parse `prompt` (so its ground truth exists to evaluate against)."""
    from distill3d.toyworld.vocab import parse_prompt

    try:
        parse_prompt(prompt)
    except ValueError:
        return False
    return True


def resolve_inputs(method: Method, given: Mapping[str, str | Path] | None, params_file: Path | None
                   ) -> dict[str, Path]:
    """The method's input folders: those given, else their params.yaml default; StageError for an unknown or a
    missing one (naming the option that sets it)."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    unknown = sorted(set(given) - set(method.input_names))
    if unknown:
        raise StageError(f"{method.name} takes no input(s) {unknown}; its inputs: {', '.join(method.input_names)}")
    whole = read_params_file(params_file) if params_file is not None else {}
    out: dict[str, Path] = {}
    for spec in method.inputs:
        value = given.get(spec.name)
        if value is None and spec.default is not None:
            value = lookup(whole, spec.default) or _builtin_default(spec.default)
        if value is None:
            continue
        path = Path(value)
        if not path.exists():
            how = f"pass {spec.option or '--input ' + spec.name}=DIR"
            if spec.made_by:
                how = f"run `dvc repro {spec.made_by}` or {how}"
            raise StageError(f"{spec.name} not found at {path}: {how}")
        out[spec.name] = path
    return out


# Where params.yaml does not say: the committed toy priors.
_BUILTIN_DEFAULTS = {"prior.path": "models/toy_prior"}


def _builtin_default(key: str) -> str | None:
    return _BUILTIN_DEFAULTS.get(key)


def check_overrides(method: Method, overrides: Mapping[str, Any] | None) -> None:
    unknown = sorted(set(overrides or {}) - method.sections)
    if unknown:
        raise StageError(f"params for unknown stage(s) {unknown}; {method.name} has {sorted(method.sections)}")


def stage_params(stage: str, runtime: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 params_file: Path | None = None, section: str | None = None) -> StageParams:
    """Validated params of `stage`: its params.yaml section (`section`, default the stage's name), then the
    run-time fields its Params declares (prompt, seed, device), then `overrides[section]` ({dotted.key: value})."""
    module = get_stage(stage)
    section = section or stage
    fields = module.Params.model_fields
    merged: dict[str, Any] = {k: v for k, v in runtime.items() if k in fields}
    merged.update((overrides or {}).get(section) or {})
    return load_params(module, params_file, section, merged)


@dataclass
class Link:
    """One step to run: its stage, validated params, and the source of each input it is given."""

    step: Step
    module: ModuleType
    params: StageParams
    sources: dict[str, str]  # stage input -> an earlier step's name or a method input


@dataclass
class Chain:
    """A method resolved for one request: what to run, with which params, reading what."""

    method: Method
    prompt: str
    inputs: dict[str, Path]  # the method's input folders
    provided: dict[str, Path]  # step name -> output supplied from outside (--init-from)
    links: list[Link]

    def wire(self, link: Link, outputs: Mapping[str, str | Path | None]) -> dict[str, Path | None]:
        """{stage input: path} for `link`, from the method's inputs, supplied outputs and `outputs` of earlier
        steps (None where an earlier step has no output yet)."""
        wired: dict[str, Path | None] = {}
        for port, source in link.sources.items():
            if source in self.inputs:
                wired[port] = self.inputs[source]
            elif source in self.provided:
                wired[port] = self.provided[source]
            else:
                value = outputs.get(source)
                wired[port] = None if value is None else Path(value)
        return wired

    def step_names(self) -> list[str]:
        return [link.step.name for link in self.links]


def _replaced(method: Method, provided_roles: Mapping[str, Any]) -> dict[str, str]:
    """{step: role} of the replaceable steps `--init-from` skips: all up to the last one whose role is given."""
    given = [i for i, name in enumerate(method.replaceable) if method.step(name).role in provided_roles]
    return {name: method.step(name).role for name in method.replaceable[: given[-1] + 1]} if given else {}


def resolve_chain(
    method: str | Method,
    prompt: str,
    *,
    inputs: Mapping[str, str | Path] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    device: str = "cpu",
    params_file: Path | None = None,
    provided: Mapping[str, str | Path] | None = None,
) -> Chain:
    """Validate a request against `method` and resolve it (no store checks, nothing runs, no Prefect).

    `inputs`: the method's input folders by name (defaults from params.yaml); `overrides`: {stage: {dotted.key:
    value}}; `provided`: {role: dir} outputs supplied for the method's replaceable steps (--init-from);
    `params_file` None means `default_params_file()`, as in the flow. Raises StageError (one line) for an unknown
    method, stage or input, bad params, a missing folder or an empty prompt.
    """
    method = get_method(method) if isinstance(method, str) else method
    params_file = Path(params_file) if params_file is not None else default_params_file()
    if not prompt or not prompt.strip():
        raise StageError("empty prompt: pass --prompt, e.g. --prompt 'a red cube'")
    if device not in ("cpu", "cuda"):
        raise StageError(f"device must be cpu or cuda, not {device!r}")
    check_overrides(method, overrides)
    provided = dict(provided or {})
    replaced = _replaced(method, provided)
    roles = {method.step(n).role for n in method.replaceable}
    stray = sorted(set(provided) - roles)
    if stray:
        raise StageError(f"{method.name} cannot take {stray} from --init-from"
                         + (f" (it replaces {sorted(roles)})" if roles else " (it has no replaceable steps)"))
    chain = Chain(method=method, prompt=prompt, inputs=resolve_inputs(method, inputs, params_file),
                  provided={step: Path(provided[role]) for step, role in replaced.items() if role in provided},
                  links=[])
    runtime = {"prompt": prompt, "seed": seed, "device": device}  # reach every stage whose Params has them
    toy = is_toy_prompt(prompt)
    made = set(chain.provided)  # steps whose outputs exist or will
    for step in method.steps:
        if step.name in replaced or (step.toy_only and not toy):
            continue
        module = get_stage(step.stage)
        sources: dict[str, str] = {}
        for port in all_inputs(module):
            source = step.inputs.get(port)
            if source is None or (source not in chain.inputs and source not in made):
                if port in module.INPUTS:
                    what = f"input {source!r}" if source in method.input_names else f"step {source!r}"
                    raise StageError(f"{method.name}: step {step.name} needs {port!r} from {what}, which "
                                     f"{'was not given' if source in method.input_names else 'this run skips'}")
                continue
            sources[port] = source
        params = stage_params(step.stage, runtime, overrides, params_file, step.section)
        chain.links.append(Link(step=step, module=module, params=params, sources=sources))
        made.add(step.name)
    return chain


@dataclass
class PlannedStep:
    """One step of a plan. `key`/`out` are None when an upstream output does not exist yet."""

    link: Link
    inputs: dict[str, Path]
    key: str | None = None
    out: Path | None = None
    complete: bool = False

    @property
    def name(self) -> str:
        return self.link.step.name


@dataclass
class Plan:
    chain: Chain
    steps: list[PlannedStep] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.steps) and all(s.complete for s in self.steps)

    @property
    def outputs(self) -> dict[str, str]:
        """{step: output dir} for the steps whose output exists."""
        return {s.name: str(s.out) for s in self.steps if s.complete}

    def names(self) -> list[str]:
        return [s.name for s in self.steps]


def plan(chain: Chain) -> Plan:
    """Walk `chain` as its flow will: each stage's key from its params and the *contents* of its inputs, and
    whether the store already holds its output. Runs `check` of every stage whose inputs exist."""
    result = Plan(chain=chain)
    outputs: dict[str, str | None] = {}
    for link in chain.links:
        wired = chain.wire(link, outputs)
        step = PlannedStep(link=link, inputs={k: v for k, v in wired.items() if v is not None})
        if all(v is not None for v in wired.values()):
            if hasattr(link.module, "check"):
                link.module.check(link.params, step.inputs)
            step.key = stage_key(link.module, link.params, step.inputs)
            step.out = store_dir(link.step.stage, step.key)
            step.complete = is_complete(step.out, step.key)
        outputs[link.step.name] = str(step.out) if step.complete else None
        result.steps.append(step)
    return result


def check_from_stage(chain: Chain, from_stage: str) -> None:
    """StageError unless `from_stage` is a step this chain runs (naming the ones it does)."""
    if from_stage not in chain.step_names():
        raise StageError(f"--from-stage {from_stage!r} is not a stage of {chain.method.name} for this prompt; "
                         f"choose one of {chain.step_names()}")


def chain_manifest(outputs: Mapping[str, str]) -> dict[str, Any]:
    """{step: {key, seconds, params, extra, content_hash, code_version, out}} read from each output's manifest."""
    chain = {}
    for name, out in outputs.items():
        m = read_manifest(Path(out)) or {}
        chain[name] = {k: m.get(k) for k in ("key", "seconds", "params", "extra", "content_hash", "code_version")}
        chain[name]["out"] = str(out)
    return chain
