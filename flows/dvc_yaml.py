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
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flows.method_spec import Method
from flows.methods import methods
from flows.plan import is_toy_prompt
from stages.core.code import ROOT, code_files
from stages.core.params import read_params_file
from stages.core.protocol import StageError, all_inputs, get_stage

DVC_YAML = ROOT / "dvc.yaml"
PARAMS = "params.yaml"


@dataclass(frozen=True)
class Fixed:
    """A stage outside the methods' chains (training and checking priors): fixed inputs and output."""

    name: str
    stage: str
    inputs: tuple[tuple[str, str], ...]
    out: str
    cache: bool = True


# The priors the methods read (params.yaml's prior.* paths), how they are made and checked.
FIXED: tuple[Fixed, ...] = (
    Fixed("train_prior", "train_prior", (), "models/toy_prior", cache=False),
    Fixed("check_prior", "check_prior", (("prior", "models/toy_prior"),), "data/prior_checks"),
)


@dataclass
class Instance:
    stage: str
    section: str
    method: str
    prompt: str
    inputs: dict[str, str]  # port -> path
    out: str
    metrics: bool
    methods: list[str] = field(default_factory=list)

    @property
    def identity(self) -> tuple:
        return self.stage, self.section, self.prompt, tuple(sorted(self.inputs.items()))


def _lookup(data: dict, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def instances(all_methods: Iterable[Method], prompts: dict[str, str], params: dict) -> list[Instance]:
    """Every (method, prompt, step) as a DVC stage instance, the same computation made once."""
    found: dict[tuple, Instance] = {}
    for method in all_methods:
        inputs = {i.name: _lookup(params, i.default) for i in method.inputs if i.default}
        for key, prompt in prompts.items():
            outs: dict[str, str] = {}
            for step in method.steps:
                if step.toy_only and not is_toy_prompt(prompt):
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
                inst = Instance(step.stage, step.section, method.name, key, wired,
                                f"data/{method.name}/{step.role}/{key}{suffix}", step.output == "metrics")
                inst = found.setdefault(inst.identity, inst)
                inst.methods.append(method.name)
                outs[step.name] = inst.out
    return list(found.values())


def _takes_prompt(stage: str) -> bool:
    return "prompt" in get_stage(stage).Params.model_fields


def _entry(stage: str, group: list[Instance]) -> dict[str, Any]:
    per_method = len({i.prompt for i in group}) < len(group)
    ports = sorted(group[0].inputs)
    items = {}
    for inst in group:
        name = f"{inst.method}-{inst.prompt}" if per_method else inst.prompt
        items[name] = {"prompt": inst.prompt, "out": inst.out, **{f"in_{p}": inst.inputs[p] for p in ports}}
    section = group[0].section
    cmd = [f"python -m stages {stage} --params {PARAMS}" + (f" --section {section}" if section != stage else "")]
    if _takes_prompt(stage):
        cmd.append("--prompt-name ${item.prompt}")
    cmd += [f"--in {p}=${{item.in_{p}}}" for p in ports]
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
    cmd = f"python -m stages {spec.stage} --params {PARAMS} {ins} --out {spec.out}".replace("  ", " ")
    out: Any = {spec.out: {"cache": False}} if not spec.cache else spec.out
    return {"cmd": cmd, "deps": code_files(get_stage(spec.stage)) + [path for _, path in spec.inputs],
            "params": [spec.stage], "outs": [out]}


def _report(method: str) -> dict[str, Any]:
    ins = f"--in assets=data/{method}/asset --in metrics=data/{method}/metrics"
    base = f"python -m stages report --params {PARAMS} --set method={method} {ins}"
    return {"cmd": [f"{base} --out data/{method}/report", f"{base} --out data/{method}/report_summary.json"],
            "deps": code_files(get_stage("report")) + [f"data/{method}/asset", f"data/{method}/metrics"],
            "params": ["report"], "outs": [f"data/{method}/report"],
            "metrics": [{f"data/{method}/report_summary.json": {"cache": False}}]}


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
    stages: dict[str, Any] = {spec.name: _fixed(spec) for spec in FIXED}
    by_stage: dict[str, list[Instance]] = {}
    for inst in instances(registered, {str(k): str(v) for k, v in prompts.items()}, params):
        by_stage.setdefault(inst.stage, []).append(inst)
    for stage, group in by_stage.items():
        shapes: dict[tuple, list[Instance]] = {}
        for inst in group:  # one foreach needs the same inputs in every item
            shapes.setdefault((tuple(sorted(inst.inputs)), inst.metrics, inst.section), []).append(inst)
        for i, part in enumerate(shapes.values()):
            name = part[0].section if part[0].section != stage else stage  # a method's own params: its own entry
            stages[name if name not in stages else f"{name}_{i + 1}"] = _entry(stage, part)
    stages["report"] = {"foreach": [m.name for m in registered], "do": _report("${item}")}
    table = "\n".join(f"#   {m.name:<13} " + " -> ".join(f"{s.name} ({s.role})" for s in m.steps) for m in registered)
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
    current = args.out.read_text() if args.out.is_file() else ""
    if args.check:
        if current != text:
            print(f"{args.out} is out of date: run `python -m flows.dvc_yaml`", file=sys.stderr)
            return 1
        return 0
    if current != text:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
