"""`--init-from`: turn an earlier run (a `distill3d generate` output dir, a stage output dir, or a stage key in the
store) into artifacts that seed another method's chain, without importing Prefect or torch.

    mode "refine": {"mesh": dir, "nerf": dir?}  -- reuse that geometry (and colour field) as it is; TextMesh then
                   skips its geometry stages (flows.plan.INIT_REPLACES) and refines the texture.
    mode "sdf":    {"init_mesh": dir}           -- start TextMesh's SDF from that mesh (pysdf) instead of a sphere.
"""

from __future__ import annotations

import json
from pathlib import Path

from stages.common import MANIFEST, StageError, artifact_name, distill3d_home, get_stage

INIT_MODES = ("refine", "sdf")
FIELD_STAGES = ("nerf_sds", "sdf_nerf")


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


def init_artifacts(source: str | Path, mode: str = "refine") -> dict[str, str]:
    """{artifact: dir} from `source` (see the module docstring). StageError when it holds no mesh."""
    if mode not in INIT_MODES:
        raise StageError(f"--init-mode must be one of {', '.join(INIT_MODES)}, not {mode!r}")
    path = resolve_source(source).absolute()
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        manifest = {}
    mesh: str | None = None
    nerf: str | None = None
    if isinstance(manifest.get("stages"), dict):  # a `distill3d generate` output: its chain of stage outputs
        outs = {name: info.get("out") for name, info in manifest["stages"].items() if isinstance(info, dict)}
        mesh = outs.get("extract_mesh") or (str(path) if (path / "mesh.glb").is_file() else None)
        nerf = next((outs[s] for s in FIELD_STAGES if outs.get(s)), None)
    elif manifest.get("stage"):  # one stage's output in the store (or a DVC out)
        artifact = artifact_name(get_stage(manifest["stage"]))
        if artifact == "nerf":
            nerf = str(path)
        else:
            mesh = str(path) if (path / "mesh.glb").is_file() else None
            nerf = (manifest.get("inputs", {}).get("nerf") or {}).get("path")
    elif (path / "mesh.glb").is_file():
        mesh = str(path)
    if nerf is not None and not Path(nerf).is_dir():
        nerf = None
    if mode == "sdf":
        if mesh is None:
            raise StageError(f"--init-from {source}: no mesh.glb to initialise the SDF from")
        return {"init_mesh": mesh}
    if mesh is None and nerf is None:
        raise StageError(f"--init-from {source}: holds neither a mesh nor a field")
    return {k: v for k, v in (("mesh", mesh), ("nerf", nerf)) if v is not None}
