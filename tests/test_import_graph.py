"""Dependencies point one way: flows -> tasks -> stages -> distill3d (and inside stages: stage modules -> shared
helpers -> core machinery), with no import cycles anywhere in the project. Read statically from the sources (every
import statement, function bodies included: a late import is still an import)."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from stages.core.code import ROOT, direct_imports

# Higher layers may import lower ones, never the reverse.
LAYERS = ("distill3d", "stages.core", "stages.shared", "stages", "tasks", "flows")
PACKAGES = ("distill3d", "stages", "tasks", "flows")


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _layer(module: str) -> int:
    return max(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + "."))


def project_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            module = _module(path)
            graph.add_node(module)
            for dep in direct_imports(path):
                target = _module(dep)
                # (a package's own __init__ runs before its modules: not a dependency of theirs)
                if target != module and not module.startswith(target + ".") and target.split(".")[0] in PACKAGES:
                    graph.add_edge(module, target)
    return graph


def test_no_import_cycles() -> None:
    cycles = list(nx.simple_cycles(project_graph()))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_no_import_points_up_a_layer() -> None:
    upward = [(a, b) for a, b in project_graph().edges if _layer(b) > _layer(a)]
    assert not upward, f"imports that point up a layer ({' -> '.join(LAYERS)}): {upward}"


def test_the_graph_is_read_from_real_imports() -> None:
    graph = project_graph()
    assert graph.has_edge("flows.cli", "flows.asset") and graph.has_edge("stages.nerf_sds", "stages.shared.prompted")
    assert graph.has_edge("stages.shared.prompted", "distill3d.priors.loading")  # an import inside a function
