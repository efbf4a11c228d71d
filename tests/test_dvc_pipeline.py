"""dvc.yaml runs each method's chain exactly as its flow does, and the stages methods share are single DVC stages.

Read through DVC's own API (the templating resolved: foreach / matrix), so what is checked is what `dvc repro` runs.
"""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from flows.plan import METHODS

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")  # inside DVC's graph code
SHARED = ("extract_mesh", "export_asset", "evaluate")


@pytest.fixture(scope="module")
def dvc_stages():
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return [(s.name, s.cmd, [str(d.def_path) for d in s.deps], [str(o.def_path) for o in s.outs])
                for s in repo.index.stages]


def _chain(dvc_stages, method: str, prompt: str) -> dict[str, tuple[list[str], list[str], str]]:
    """{stage module: (data deps, outs, cmd)} of the DVC stages making `method`'s asset for `prompt`."""
    chain = {}
    for name, cmd, deps, outs in dvc_stages:
        base, _, gen = name.partition("@")
        if base in METHODS[method] and gen in (prompt, f"{method}-{prompt}"):
            module = shlex.split(cmd if isinstance(cmd, str) else cmd[0])[3]  # python -m stages NAME ...
            assert module == base, f"DVC stage {name} runs stage {module}"
            chain[base] = ([d for d in deps if d.startswith("data/")], outs, cmd)
    return chain


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_chain_in_dvc_is_its_flow_chain(dvc_stages, method) -> None:
    prompts = yaml.safe_load((REPO / "params.yaml").read_text())["prompts"]
    for prompt in prompts:
        chain = _chain(dvc_stages, method, prompt)
        assert set(chain) == set(METHODS[method]), f"{method}/{prompt}: dvc.yaml has {sorted(chain)}"
        made: dict[str, str] = {}  # out path -> stage that makes it, in the flow's order
        for stage in METHODS[method]:
            data_deps, outs, _ = chain[stage]
            for dep in data_deps:  # every data input comes from an earlier stage of the same chain
                assert dep in made, f"{method}/{prompt}: {stage} reads {dep}, which no earlier stage makes"
            made.update({o: stage for o in outs})
            assert all(o.startswith(f"data/{method}/") for o in outs), (stage, outs)


def test_stages_shared_by_methods_are_one_dvc_stage_each(dvc_stages) -> None:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    definitions = defaultdict(set)  # stage module -> dvc.yaml entries that run it
    for name, cmd, _, _ in dvc_stages:
        module = shlex.split(cmd if isinstance(cmd, str) else cmd[0])[3]
        definitions[module].add(name.partition("@")[0])
    for stage in SHARED:
        assert all(stage in METHODS[m] for m in METHODS)
        assert definitions[stage] == {stage}, f"{stage} is run by several dvc.yaml entries: {definitions[stage]}"
        assert "matrix" in spec[stage] and set(spec[stage]["matrix"]) == {"method", "prompt"}
        names = {n for n, *_ in dvc_stages if n.startswith(stage + "@")}
        assert {re.match(rf"{stage}@(\w+?)-", n).group(1) for n in names} == set(METHODS)


def test_matrix_stages_read_the_prompt_named_in_params(tmp_path) -> None:
    """`--prompt-name` (what the evaluate matrix passes) resolves params.yaml's prompts[KEY], or says what exists."""
    import subprocess
    import sys

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
            assert downstream == {f"export_asset@textmesh-{k}", f"evaluate@textmesh-{k}", "report@textmesh"}
