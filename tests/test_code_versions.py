"""A stage's code version is the hash of the project modules it really imports (stages/core/code.py): an edit
re-keys exactly the stages whose code uses the edited module, in the store and (same set) in dvc.yaml."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from stages.core.code import closure, imported_names

REPO = Path(__file__).resolve().parents[1]
STAGES = ("nerf_sds", "sdf_nerf", "extract_mesh", "bake_texture", "export_asset", "evaluate")
VERSIONS = f"""
import json
from stages.core.code import code_version
from stages.core.protocol import get_stage
print(json.dumps({{s: code_version(get_stage(s)) for s in {STAGES!r}}}))
"""


def _copy_project(dst: Path) -> Path:
    for package in ("distill3d", "stages"):
        shutil.copytree(REPO / package, dst / package, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _versions(root: Path) -> dict[str, str]:
    r = subprocess.run([sys.executable, "-c", VERSIONS], cwd=root, capture_output=True, text=True,
                       env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _touch(path: Path) -> None:
    with open(path, "a") as f:
        f.write("# edited\n")


def test_an_edit_rekeys_only_the_stages_whose_code_uses_it(tmp_path) -> None:
    root = _copy_project(tmp_path)
    base = _versions(root)
    _touch(root / "distill3d" / "viz" / "turntable.py")
    after_turntable = _versions(root)
    changed = {s for s in STAGES if after_turntable[s] != base[s]}
    assert "export_asset" in changed and "nerf_sds" not in changed and "sdf_nerf" not in changed

    _touch(root / "stages" / "shared" / "field_outputs.py")  # writes nerf_sds's views.png and history.json
    after_helper = _versions(root)
    changed = {s for s in STAGES if after_helper[s] != after_turntable[s]}
    assert changed == {"nerf_sds", "sdf_nerf"}


def test_imports_are_read_from_function_bodies_and_relative_forms() -> None:
    source = "import a.b\nfrom . import c\nfrom .d import e\ndef f():\n    from g.h import i\n" \
             "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import hidden\n"
    names = imported_names(source, "pkg.mod")
    assert {"a.b", "pkg.c", "pkg.d", "pkg.d.e", "g.h", "g.h.i"} <= names and "hidden" not in names


def test_closure_includes_parent_packages_and_transitive_imports() -> None:
    files = {p.relative_to(REPO).as_posix() for p in closure(REPO / "stages" / "export_asset.py")}
    assert {"distill3d/__init__.py", "distill3d/mesh/__init__.py", "distill3d/mesh/types.py",
            "distill3d/viz/turntable.py", "stages/core/protocol.py"} <= files
    assert not any(f.startswith(("distill3d/fields/", "distill3d/optimize/", "flows/", "tasks/")) for f in files)
