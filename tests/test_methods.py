"""Every method is defined once (flows/methods.py) and what surrounds it agrees with the definition: its flow module,
prefect.yaml's deployments, the CLI's options for its inputs, and the shortcuts the CLI and sweeps address."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from distill3d.nested import lookup
from flows.methods import methods
from stages.core.params import load_params
from stages.core.protocol import all_inputs, get_stage

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(methods()))
def test_definition_wires_real_stage_inputs_and_shortcuts(name) -> None:
    spec = methods()[name]
    spec.check()
    for step in spec.steps:
        module = get_stage(step.stage)
        assert set(step.inputs) <= set(all_inputs(module)), f"{name}/{step.name} wires inputs the stage lacks"
        assert set(module.INPUTS) <= set(step.inputs), f"{name}/{step.name} leaves a required input unwired"
    for dotted in spec.steps_param + spec.guidance_param:  # every shortcut is a real param of its stage
        section, _, key = dotted.partition(".")
        module = get_stage(next(s.stage for s in spec.steps if s.section == section))
        params = load_params(module, REPO / "params.yaml", section, {key: 3})  # unknown keys are errors
        assert lookup(params.model_dump(), key) == 3, dotted
    assert spec.steps_param and spec.guidance_param


@pytest.mark.parametrize("name", sorted(methods()))
def test_flow_module_and_deployment_derive_from_the_definition(name) -> None:
    flow = getattr(importlib.import_module(f"flows.{name}"), name)
    assert flow.name == name
    deployments = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    assert deployments[name]["entrypoint"] == f"flows/{name}.py:{name}"


def test_deployment_parameters_are_parameters_of_their_flows() -> None:
    for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]:
        path, _, attr = d["entrypoint"].partition(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attr)
        accepted = set(inspect.signature(flow.fn).parameters)
        assert set(d.get("parameters") or {}) <= accepted, (d["name"], set(d["parameters"]) - accepted)


def test_every_input_option_is_a_cli_option() -> None:
    from typer.main import get_command

    from flows.cli import app

    generate = get_command(app).commands["generate"]
    options = {opt for p in generate.params for opt in p.opts}
    assert "--input" in options
    for spec in methods().values():
        for i in spec.inputs:
            if i.option:
                assert i.option in options, f"{spec.name}'s input {i.name} names {i.option}, which generate lacks"
