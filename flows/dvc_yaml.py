"""dvc.yaml, generated from the method definitions (flows/methods.py) and params.yaml's prompts:

    python -m flows.dvc_yaml            # rewrite dvc.yaml (`make run` does this before `dvc repro`)
    python -m flows.dvc_yaml --check    # exit 1 if dvc.yaml is not what the definitions give

Every step of every method, for every prompt of params.yaml, becomes one DVC stage instance running
`python -m stages STAGE ...`, its output at data/<method>/<role>/<prompt name>. Instances that are the same
computation (same stage, params section, prompt and inputs) are one DVC stage, whichever methods use them: a
stage's dvc.yaml entry is a `foreach` over its instances, named `STAGE@<prompt>` when each prompt has one instance
and `STAGE@<method>-<prompt>` when methods differ. A stage's code dependencies are the project files it imports
(stages/core/code.py: the same set that versions its outputs in the store), so editing a module re-runs exactly
the stages whose code uses it. Adding a prompt to params.yaml: re-generate (or `make run`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill3d.nested import lookup
from flows.generated_file import sync
from flows.method_spec import Method
from flows.methods import methods
from flows.plan import is_toy_prompt
from stages.core.code import ROOT, code_files
from stages.core.params import read_params_file
from stages.core.protocol import StageError, all_inputs, get_stage
from stages.shared.runs import RunSpec, points

DVC_YAML = ROOT / "dvc.yaml"
PARAMS = "params.yaml"


@dataclass(frozen=True)
class Fixed:
    """A stage outside the methods' chains (training and checking priors): fixed inputs and output."""

    name: str
    stage: str
    inputs: tuple[tuple[str, str], ...]
    out: str  # kept in git (cache: false), see FIXED
    section: str | None = None  # its params.yaml section, when not the stage's name


# The priors the methods read (params.yaml's prior.* paths), how they are made and checked. Weights and checks are
# kept in git (cache: false; ~1 MB of checks): a fresh clone's `dvc repro` finds them current and re-makes neither
# (the checks sample 16 DDIM-50 images per caption: ~8 min of CPU).
FIXED: tuple[Fixed, ...] = (
    Fixed("train_prior", "train_prior", (), "models/toy_prior"),
    Fixed("check_prior", "check_prior", (("prior", "models/toy_prior"),), "data/prior_checks/pixel"),
    Fixed("train_latent_prior", "train_latent_prior", (), "models/toy_latent_prior"),
    Fixed("check_latent_prior", "check_prior", (("prior", "models/toy_latent_prior"),), "data/prior_checks/latent",
          section="check_latent_prior"),
    Fixed("train_mv_prior", "train_mv_prior", (), "models/toy_mv_prior"),
    Fixed("check_mv_prior", "check_mv_prior", (("prior", "models/toy_mv_prior"),), "data/prior_checks/multiview"),
)


@dataclass
class Instance:
    stage: str
    section: str
    label: str  # the foreach item's name: <method>-<prompt>, or <run>-<point> for the comparison's runs
    prompt: str
    inputs: dict[str, str]  # port -> path
    out: str
    metrics: bool
    sets: tuple[str, ...] = ()  # `--set key=value` overrides of this instance (a run's seed and swept params)
    methods: list[str] = field(default_factory=list)

    @property
    def identity(self) -> tuple:
        return self.stage, self.section, self.prompt, tuple(sorted(self.inputs.items())), self.sets


@dataclass(frozen=True)
class Chain:
    """One method's chain to lay out: its prompt (a key of params.yaml's prompts), seed and overrides, where its
    outputs go (data/<root>/<role>/<name>) and the label of its instances."""

    method: Method
    prompt_key: str
    root: str
    name: str
    label: str
    seed: int = 0
    overrides: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()

    def sets_for(self, section: str, takes_seed: bool) -> tuple[str, ...]:
        out = [f"{key}={json.dumps(value)}" for sec, items in self.overrides if sec == section for key, value in items]
        if takes_seed and self.seed:
            out.append(f"seed={self.seed}")
        return tuple(sorted(out))


def experiment_methods(all_methods: Iterable[Method], params: dict) -> list[Method]:
    """The methods params.yaml's `methods` list runs on every prompt (default: every registered one)."""
    registered = {m.name: m for m in all_methods}
    names = params.get("methods") or list(registered)
    if not isinstance(names, list) or any(n not in registered for n in names):
        raise StageError(f"params.yaml `methods` must list method names, got {names!r}; known: "
                         f"{', '.join(registered)}")
    return [registered[n] for n in names]


def chains(all_methods: Iterable[Method], prompts: dict[str, str], params: dict) -> list[Chain]:
    """The experiment's methods on every prompt, then the comparison's runs (stages/shared/runs.py), which may use
    any registered method."""
    registered = {m.name: m for m in all_methods}
    out = [Chain(m, key, m.name, key, f"{m.name}-{key}") for m in experiment_methods(registered.values(), params)
           for key in prompts]
    for run, raw in ((params.get("comparison") or {}).get("runs") or {}).items():
        spec = RunSpec.model_validate(raw)
        if spec.method not in registered or spec.prompt not in prompts:
            raise StageError(f"comparison.runs.{run}: unknown method {spec.method!r} or prompt {spec.prompt!r}")
        for point in points(spec):
            overrides = tuple(sorted((sec, tuple(sorted(items.items()))) for sec, items in point.overrides.items()))
            out.append(Chain(registered[spec.method], spec.prompt, f"runs/{run}", point.name, f"{run}-{point.name}",
                             point.seed, overrides))
    return out


def instances(all_methods: Iterable[Method], prompts: dict[str, str], params: dict) -> list[Instance]:
    """Every chain's steps as DVC stage instances, the same computation (stage, params, prompt, inputs and
    overrides) made once: a run's seed-0 point without overrides is the method's own chain."""
    found: dict[tuple, Instance] = {}
    for chain in chains(all_methods, prompts, params):
        method = chain.method
        inputs = {i.name: lookup(params, i.default) for i in method.inputs if i.default}
        outs: dict[str, str] = {}
        for step in method.steps:
            if step.toy_only and not is_toy_prompt(prompts[chain.prompt_key]):
                continue
            module = get_stage(step.stage)
            wired = {}
            for port in all_inputs(module):
                source = step.inputs.get(port)
                path = outs.get(source) if source in outs else inputs.get(source)
                if path is None:
                    if port in module.INPUTS:
                        raise StageError(f"{method.name}/{step.name}: no path for input {port} in dvc.yaml")
                    continue
                wired[port] = str(path)
            suffix = ".json" if step.output == "metrics" else ""
            sets = chain.sets_for(step.section, "seed" in module.Params.model_fields)
            inst = Instance(step.stage, step.section, chain.label, chain.prompt_key, wired,
                            f"data/{chain.root}/{step.role}/{chain.name}{suffix}", step.output == "metrics", sets)
            inst = found.setdefault(inst.identity, inst)
            inst.methods.append(method.name)
            outs[step.name] = inst.out
    return list(found.values())


def _takes_prompt(stage: str) -> bool:
    return "prompt" in get_stage(stage).Params.model_fields


def _entry(stage: str, group: list[Instance]) -> dict[str, Any]:
    # STAGE@<prompt> when each prompt has one instance, else STAGE@<method>-<prompt> / STAGE@<run>-<point>
    by_prompt = len({i.prompt for i in group}) == len(group) and not any(i.out.startswith("data/runs/") for i in group)
    ports = sorted(group[0].inputs)
    items = {}
    for inst in group:
        name = inst.prompt if by_prompt else inst.label
        items[name] = {"prompt": inst.prompt, "out": inst.out, **{f"in_{p}": inst.inputs[p] for p in ports}}
        if any(i.sets for i in group):
            # quoted for the shell: a mapping or a string with spaces stays one `--set` argument
            items[name]["sets"] = " ".join(f"--set {shlex.quote(x)}" for x in inst.sets)
    section = group[0].section
    cmd = [f"python -m stages {stage} --params {PARAMS}" + (f" --section {section}" if section != stage else "")]
    if _takes_prompt(stage):
        cmd.append("--prompt-name ${item.prompt}")
    cmd += [f"--in {p}=${{item.in_{p}}}" for p in ports]
    if any(i.sets for i in group):
        cmd.append("${item.sets}")
    cmd.append("--out ${item.out}")
    params: list[Any] = [section]
    if _takes_prompt(stage):
        params.append("prompts.${item.prompt}")
    do: dict[str, Any] = {
        "cmd": " ".join(cmd),
        "deps": code_files(get_stage(stage)) + [f"${{item.in_{p}}}" for p in ports],
        "params": params,
    }
    do["metrics" if group[0].metrics else "outs"] = (
        [{"${item.out}": {"cache": False}}] if group[0].metrics else ["${item.out}"])
    return {"foreach": items, "do": do}


def _fixed(spec: Fixed) -> dict[str, Any]:
    ins = " ".join(f"--in {p}={path}" for p, path in spec.inputs)
    section = f"--section {spec.section}" if spec.section else ""
    cmd = f"python -m stages {spec.stage} --params {PARAMS} {section} {ins} --out {spec.out}".replace("  ", " ")
    return {"cmd": cmd, "deps": code_files(get_stage(spec.stage)) + [path for _, path in spec.inputs],
            "params": [spec.section or spec.stage], "outs": [{spec.out: {"cache": False}}]}


def _report(method: str) -> dict[str, Any]:
    ins = f"--in assets=data/{method}/asset --in metrics=data/{method}/metrics"
    base = f"python -m stages report --params {PARAMS} --set method={method} {ins}"
    return {"cmd": [f"{base} --out data/{method}/report", f"{base} --out data/{method}/report_summary.json"],
            "deps": code_files(get_stage("report")) + [f"data/{method}/asset", f"data/{method}/metrics"],
            "params": ["report"], "outs": [f"data/{method}/report"],
            "metrics": [{f"data/{method}/report_summary.json": {"cache": False}}]}


def _comparison(insts: list[Instance]) -> dict[str, Any]:
    """The comparison stage: every asset and metrics folder the experiment writes (the methods' and the runs'; a
    run whose every point is a method's own chain has none of its own), into data/comparison."""
    base = f"python -m stages comparison --params {PARAMS} --in results=data"
    deps = sorted({str(Path(i.out).parent) for i in insts if Path(i.out).parent.name in ("asset", "metrics")})
    return {"cmd": [f"{base} --out data/comparison", f"{base} --out data/comparison_summary.json"],
            "deps": code_files(get_stage("comparison")) + deps, "params": ["comparison"],
            "outs": ["data/comparison"], "metrics": [{"data/comparison_summary.json": {"cache": False}}]}


HEADER = """\
# GENERATED by `python -m flows.dvc_yaml` from the method definitions (flows/methods.py) and params.yaml's prompts:
# do not edit by hand (a test checks it is current). Every cmd is `python -m stages NAME ...` (no Prefect start-up
# per stage); `make run` puts .venv/bin on PATH and re-generates this file before `dvc repro`.
#
# Outputs live at data/<method>/<role>/<prompt name>, the role an output plays in its method's chain. A stage that
# several methods run on the same inputs (e.g. extract_mesh, evaluate) is one entry; a computation two methods share
# exactly (same stage, params and inputs) is one stage instance, named STAGE@<prompt>.
#
#   method        steps (role)
{table}
"""


def generate(params_file: Path = ROOT / PARAMS) -> str:
    """The text of dvc.yaml for the registered methods and `params_file`'s prompts."""
    params = read_params_file(params_file)
    prompts = params.get("prompts") or {}
    if not isinstance(prompts, dict) or not prompts:
        raise StageError(f"{params_file}: `prompts` must map names to prompts, e.g. red_cube: a red cube")
    registered = list(methods().values())
    default = experiment_methods(registered, params)
    stages: dict[str, Any] = {spec.name: _fixed(spec) for spec in FIXED}
    by_stage: dict[str, list[Instance]] = {}
    every = instances(registered, {str(k): str(v) for k, v in prompts.items()}, params)
    for inst in every:
        by_stage.setdefault(inst.stage, []).append(inst)
    for stage, group in by_stage.items():
        shapes: dict[tuple, list[Instance]] = {}
        for inst in group:  # one foreach needs the same inputs in every item
            shapes.setdefault((tuple(sorted(inst.inputs)), inst.metrics, inst.section), []).append(inst)
        for i, part in enumerate(shapes.values()):
            name = part[0].section if part[0].section != stage else stage  # a method's own params: its own entry
            stages[name if name not in stages else f"{name}_{i + 1}"] = _entry(stage, part)
    stages["report"] = {"foreach": [m.name for m in default], "do": _report("${item}")}
    stages["comparison"] = _comparison(every)
    table = "\n".join(f"#   {m.name:<15} " + " -> ".join(f"{s.name} ({s.role})" for s in m.steps) for m in registered)
    body = yaml.safe_dump({"stages": stages}, sort_keys=False, width=120, default_flow_style=False)
    return HEADER.format(table=table) + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.dvc_yaml", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml is out of date")
    parser.add_argument("--params", type=Path, default=ROOT / PARAMS)
    parser.add_argument("--out", type=Path, default=DVC_YAML)
    args = parser.parse_args(argv)
    try:
        text = generate(args.params)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return sync(args.out, text, args.check, "python -m flows.dvc_yaml")


if __name__ == "__main__":
    sys.exit(main())
