"""`--init-from`: turn an earlier run (a `distill3d generate` output dir, a stage output dir, or a stage key in the
store) into folders that seed another method's chain, without importing Prefect or torch.

    mode "refine": {"field": dir?, "mesh": dir?} -- outputs by role for the method's replaceable steps: TextMesh
                   then skips its geometry steps and refines the texture of that geometry.
    mode "sdf":    {"init_mesh": dir}            -- an input: TextMesh's SDF starts from that mesh (pysdf).
"""

from __future__ import annotations

import json
from pathlib import Path

from stages.core.home import distill3d_home
from stages.core.keys import MANIFEST
from stages.core.protocol import StageError

INIT_MODES = ("refine", "sdf")
FIELD_FILE, MESH_FILE = "field.json", "mesh.glb"


def resolve_source(source: str | Path) -> Path:
    """A directory, or a stage key (prefix of >= 8 hex digits) looked up in `$DISTILL3D_HOME/store/*/`."""
    path = Path(source)
    if path.exists():
        return path
    text = str(source)
    if len(text) >= 8 and all(c in "0123456789abcdef" for c in text.lower()):
        found = sorted(p for p in (distill3d_home() / "store").glob(f"*/{text[:16].lower()}*") if p.is_dir())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise StageError(f"--init-from {text}: several stage outputs match: {[str(p) for p in found]}")
    raise StageError(f"--init-from {source}: no such directory or stage key in {distill3d_home() / 'store'}")


def _holding(dirs: list[str | None], file: str) -> str | None:
    return next((d for d in dirs if d and (Path(d) / file).is_file()), None)


def init_artifacts(source: str | Path, mode: str = "refine") -> dict[str, str]:
    """Folders from `source` by role or input name (see the module docstring). StageError when it holds none."""
    if mode not in INIT_MODES:
        raise StageError(f"--init-mode must be one of {', '.join(INIT_MODES)}, not {mode!r}")
    path = resolve_source(source).absolute()
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    candidates: list[str | None] = [str(path)]
    if isinstance(manifest.get("stages"), dict):  # a `distill3d generate` output: its chain of stage outputs
        candidates = [info.get("out") for info in manifest["stages"].values() if isinstance(info, dict)]
        candidates.append(str(path))
    elif isinstance(manifest.get("inputs"), dict):  # one stage's output: it and the outputs it read
        candidates += [(i or {}).get("path") for i in manifest["inputs"].values()]
    # the untextured mesh of a chain (extract_mesh) comes before textured ones: it is what the chain meshed
    meshes = [d for d in candidates if d and (Path(d) / MESH_FILE).is_file()]
    mesh = next((d for d in meshes if (Path(d) / "level.json").is_file()), meshes[0] if meshes else None)
    field = _holding(candidates, FIELD_FILE)
    if mode == "sdf":
        if mesh is None:
            raise StageError(f"--init-from {source}: no {MESH_FILE} to initialise the SDF from")
        return {"init_mesh": mesh}
    if mesh is None and field is None:
        raise StageError(f"--init-from {source}: holds neither a mesh nor a field")
    return {k: v for k, v in (("mesh", mesh), ("field", field)) if v is not None}
