"""Code versions: the code of a stage is the project modules it really imports, transitively, and nothing else.

Imports are read statically from the source (every ``import`` / ``from ... import`` anywhere in a module, function
bodies included, since stages import torch-heavy modules inside ``run``; ``if TYPE_CHECKING:`` blocks excluded) and
resolved against the repository root: a name counts when it is a module or package of this project (a ``.py`` file or
a package ``__init__.py`` under the root); importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``, so
those count too. Third-party modules never count (their versions are pinned by the project).

``code_version`` (part of the stage key) and dvc.yaml's code dependencies (generated from ``code_files``) are the
same set, so the Prefect store and DVC re-run exactly the same stages after an edit.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]  # the repository root: distill3d/, stages/, tasks/, flows/


def module_file(name: str) -> Path | None:
    """The project file of module ``name`` (``a/b.py`` or ``a/b/__init__.py`` under ROOT), else None."""
    if not name:
        return None
    base = ROOT.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _module_name(path: Path) -> str:
    rel = path.resolve().relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(source: str, module_name: str, is_package: bool = False) -> set[str]:
    """Every module name an import statement of ``source`` may load (absolute; relative imports resolved)."""
    package = module_name if is_package else module_name.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return {n for n in names if n}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def direct_imports(path: Path) -> set[Path]:
    """Project files that importing ``path`` loads directly (its imports and their parent packages)."""
    path = Path(path).resolve()
    try:
        name = _module_name(path)
    except ValueError:  # a file outside the project (a test's fake stage): absolute imports only
        name = path.stem
    found: set[Path] = set()
    for imported in imported_names(path.read_text(), name, path.name == "__init__.py"):
        for parent in _parents(imported):
            file = module_file(parent)
            if file is not None:
                found.add(file)
    found.discard(path)
    return found


@lru_cache(maxsize=None)
def _closure(path: Path) -> tuple[Path, ...]:
    seen: set[Path] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(direct_imports(current) - seen)
        try:  # importing a module runs its packages' __init__ files first
            todo.extend(f for p in _parents(_module_name(current))[:-1] if (f := module_file(p)) is not None)
        except ValueError:  # a file outside the project
            pass
    return tuple(sorted(seen))


def closure(path: Path) -> list[Path]:
    """``path`` and every project file it imports, transitively (sorted). Import structure is read once per
    process; file contents are hashed anew by ``code_version``."""
    return list(_closure(Path(path).resolve()))


def code_files(stage_module: ModuleType) -> list[str]:
    """The stage's code: its file and the project files it imports, as paths relative to the repository root
    (or absolute for files outside it). Empty for a module built in memory (a test's fake stage)."""
    if getattr(stage_module, "__file__", None) is None:
        return []
    out = []
    for file in closure(Path(stage_module.__file__)):
        try:
            out.append(file.relative_to(ROOT).as_posix())
        except ValueError:
            out.append(str(file))
    return out


@lru_cache(maxsize=4096)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def code_version(stage_module: ModuleType) -> str:
    """sha256 over the relative paths and contents of ``code_files(stage_module)`` (for a module built in memory:
    over the names it defines)."""
    h = hashlib.sha256()
    if getattr(stage_module, "__file__", None) is None:
        h.update(repr(sorted(vars(stage_module))).encode())
    for rel in code_files(stage_module):
        file = ROOT / rel if not Path(rel).is_absolute() else Path(rel)
        st = file.stat()
        h.update(rel.encode() + b"\0" + _file_digest(str(file), st.st_mtime_ns, st.st_size).encode() + b"\n")
    return h.hexdigest()
