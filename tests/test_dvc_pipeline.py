"""dvc.yaml is generated from the method definitions and runs each method's chain exactly as its flow does; the stages
methods share are single DVC stages; a stage's code dependencies are exactly the files its code imports.

Read through DVC's own API (the templating resolved), so what is checked is what `dvc repro` runs.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from flows.dvc_yaml import experiment_methods, generate
from flows.methods import methods
from stages.core.code import code_files
from stages.core.protocol import get_stage

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")  # inside DVC's graph code


@pytest.fixture(scope="module")
def dvc_stages():
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return [(s.name, s.cmd, [str(d.def_path) for d in s.deps], [str(o.def_path) for o in s.outs])
                for s in repo.index.stages]


def _module(cmd) -> str:
    return shlex.split(cmd if isinstance(cmd, str) else cmd[0])[3]  # python -m stages NAME ...


def _section(cmd) -> str:
    """The params section a stage's command reads (`--section S`, else the stage's name)."""
    words = shlex.split(cmd if isinstance(cmd, str) else cmd[0])
    return words[words.index("--section") + 1] if "--section" in words else words[3]


def test_dvc_yaml_is_what_the_definitions_generate() -> None:
    assert (REPO / "dvc.yaml").read_text() == generate(REPO / "params.yaml"), \
        "dvc.yaml is out of date: run `python -m flows.dvc_yaml`"


PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
EXPERIMENT = [m.name for m in experiment_methods(methods().values(), PARAMS)]


@pytest.mark.parametrize("method", EXPERIMENT)
def test_each_methods_dvc_chain_is_its_definition(dvc_stages, method) -> None:
    """For every prompt and method of the experiment (params.yaml's `methods`): the DVC stages that make the method's
    asset run the method's stages, each reading exactly what the definition wires into it (outputs of its earlier
    steps) and writing data/<method>/<role>/<prompt>."""
    spec = methods()[method]
    prompts = yaml.safe_load((REPO / "params.yaml").read_text())["prompts"]
    by_out = {o: (name, cmd, deps) for name, cmd, deps, outs in dvc_stages for o in outs}
    for prompt in prompts:
        made: dict[str, str] = {}  # step -> its output path
        for step in spec.steps:
            out = next((o for o in by_out if o in (f"data/{m}/{step.role}/{prompt}" + (".json" if step.output ==
                                                   "metrics" else "") for m in methods())
                        and _module(by_out[o][1]) == step.stage and _section(by_out[o][1]) == step.section
                        and all(made.get(src, "?") in by_out[o][2] for src in step.inputs.values() if src in made)),
                       None)
            assert out is not None, f"{method}/{prompt}: no DVC stage runs {step.name} on the definition's inputs"
            name, cmd, deps = by_out[out]
            data_deps = sorted(d for d in deps if d.startswith("data/"))
            wanted = sorted(made[src] for src in step.inputs.values() if src in made)
            assert data_deps == wanted, f"{name} reads {data_deps}, the definition wires {wanted}"
            made[step.name] = out


def test_a_stage_is_one_dvc_entry_and_shared_computations_are_one_instance(dvc_stages) -> None:
    entries = defaultdict(set)  # (stage module, params section) -> dvc.yaml entries that run it
    for name, cmd, _, _ in dvc_stages:
        entries[_module(cmd), _section(cmd)].add(name.partition("@")[0])
    assert all(len(e) == 1 for e in entries.values()), entries
    outs = [o for *_, stage_outs in dvc_stages for o in stage_outs]
    assert len(outs) == len(set(outs))


def test_code_dependencies_are_what_the_stage_imports(dvc_stages) -> None:
    for name, cmd, deps, _ in dvc_stages:
        code = sorted(d for d in deps if d.endswith(".py"))
        assert code == sorted(code_files(get_stage(_module(cmd)))), name
    export = next(d for n, c, d, _ in dvc_stages if n.startswith("export_asset@"))
    nerf = next(d for n, c, d, _ in dvc_stages if n.startswith("nerf_sds@"))
    assert "distill3d/viz/turntable.py" in export and "distill3d/viz/turntable.py" not in nerf
    assert "stages/shared/field_outputs.py" in nerf


def test_matrix_stages_read_the_prompt_named_in_params(tmp_path) -> None:
    """`--prompt-name` resolves params.yaml's prompts[KEY], or says which prompts exist."""
    (tmp_path / "params.yaml").write_text("prompts:\n  cube: a red cube\nevaluate:\n  size: 16\n")
    run = [sys.executable, "-m", "stages", "evaluate", "--params", str(tmp_path / "params.yaml"),
           "--in", f"asset={tmp_path / 'missing'}", "--out", str(tmp_path / "out")]
    r = subprocess.run(run + ["--prompt-name", "sphere"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "has no prompts.sphere (its prompts: cube)" in r.stderr
    from stages.__main__ import named_prompt

    assert named_prompt(tmp_path / "params.yaml", "cube") == "a red cube"


def test_a_texture_param_reaches_only_the_texture_stages_downstream() -> None:
    """`dvc repro` after a change to params.yaml's texture_finetune section re-runs texture_finetune and what
    depends on it: TextMesh's export_asset, evaluate and report of that prompt, nothing of the geometry or of
    DreamFusion (DVC's graph: a stage is re-run when a params key it lists or an upstream output changes)."""
    import networkx as nx
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    prompts = yaml.safe_load((REPO / "params.yaml").read_text())["prompts"]
    with Repo(str(REPO)) as repo:
        graph = repo.index.graph
        by_name = {s.name: s for s in graph.nodes}
        readers = {s.name for s in graph.nodes for d in s.deps
                   if isinstance(d, ParamsDependency) and any(p.split(".")[0] == "texture_finetune" for p in d.params)}
        assert readers == {f"texture_finetune@{k}" for k in prompts}
        for k in prompts:
            downstream = {s.name for s in nx.ancestors(graph, by_name[f"texture_finetune@{k}"])}  # edges: to deps
            comparison = {"comparison"} & set(by_name)  # the methods' comparison reads every method's metrics
            assert downstream == {f"export_asset@textmesh-{k}", f"evaluate@textmesh-{k}", "report@textmesh",
                                  *comparison}


@pytest.mark.slow
def test_dvc_status_after_touching_the_turntable_lists_only_the_stages_that_use_it(tmp_path) -> None:
    """In a copy of the repository: `dvc status` before and after appending a comment to distill3d/viz/turntable.py;
    the stages that gain it as a modified dependency are exactly those whose code imports it."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files + ["dvc.yaml", "dvc.lock", "params.yaml"]:
        if (REPO / f).is_file():
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, tmp_path / f)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)

    def modified() -> dict[str, set[str]]:
        r = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=tmp_path, capture_output=True,
                           text=True, env={**__import__("os").environ, "DVC_NO_ANALYTICS": "1"})
        assert r.returncode == 0, r.stderr
        out = {}
        for stage, changes in json.loads(r.stdout or "{}").items():
            deps = [c["changed deps"] for c in changes if isinstance(c, dict) and "changed deps" in c]
            out[stage] = {d for change in deps for d in change}
        return out

    lock = (yaml.safe_load((tmp_path / "dvc.lock").read_text()) or {}).get("stages", {})
    before = modified()
    with open(tmp_path / "distill3d" / "viz" / "turntable.py", "a") as f:
        f.write("# touched\n")
    after = modified()
    gained = {s for s in after if "distill3d/viz/turntable.py" in after[s] - before.get(s, set())}
    users = {name for name, entry in lock.items()  # dvc.lock is current: its deps are dvc.yaml's
             if any(d["path"] == "distill3d/viz/turntable.py" for d in entry.get("deps", []))}
    assert users and gained == users
    assert not any(n.startswith(("nerf_sds@", "sdf_nerf@", "extract_mesh@")) for n in gained)


def test_a_runs_mapping_override_reaches_the_stage_as_one_argument(tmp_path) -> None:
    """A comparison run's override whose value is a mapping (`shading_probs: {albedo: 1.0}`) is one shell word in the
    generated command and parses back to the mapping."""
    from stages.core.params import parse_override

    (tmp_path / "params.yaml").write_text(
        "prior: {path: models/toy_prior}\nprompts:\n  face: an orange sphere with a face\nmethods: [dreamfusion]\n"
        "comparison:\n  runs:\n"
        "    janus: {method: dreamfusion, prompt: face, seeds: [1], evidence: janus_view_prompts,\n"
        "            set: {nerf_sds.optimize.shading_probs: {albedo: 1.0}, nerf_sds.guidance.guidance_scale: 20}}\n")
    stages = yaml.safe_load(generate(tmp_path / "params.yaml"))["stages"]
    item = stages["nerf_sds"]["foreach"]["janus-s1"]
    words = shlex.split(item["sets"])
    assert words[0::2] == ["--set"] * 3
    assert dict(parse_override(w) for w in words[1::2]) == {
        "guidance.guidance_scale": 20, "optimize.shading_probs": {"albedo": 1.0}, "seed": 1}
