"""GLB export/import of ``TexturedMesh`` through trimesh.

Export: a single PBR material (metallic 0, roughness 1, so viewers show the albedo as baked) whose baseColorTexture is
the texture (PNG) with TEXCOORD_0, or COLOR_0 vertex colours when there is no texture. uv are v-up here and trimesh
writes glTF's t = 1 - v (and flips back on import), so the texture image is stored as-is with row 0 at the top.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

from distill3d.mesh.types import TexturedMesh


def to_trimesh(mesh: TexturedMesh) -> trimesh.Trimesh:
    """``TexturedMesh`` -> ``trimesh.Trimesh`` with a PBR texture material or vertex colours (no processing)."""
    v = mesh.vertices.detach().cpu().numpy().astype(np.float64)
    f = mesh.faces.detach().cpu().numpy().astype(np.int64)
    if mesh.has_uv_texture:
        tex = (mesh.texture.detach().cpu().clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
        material = trimesh.visual.material.PBRMaterial(
            baseColorTexture=Image.fromarray(tex), metallicFactor=0.0, roughnessFactor=1.0,
            doubleSided=False,
        )
        visual = trimesh.visual.TextureVisuals(uv=mesh.uv.detach().cpu().numpy().astype(np.float64), material=material)
        return trimesh.Trimesh(v, f, visual=visual, process=False)
    if mesh.vertex_colors is not None:
        rgb = (mesh.vertex_colors.detach().cpu().clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
        rgba = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
        return trimesh.Trimesh(v, f, vertex_colors=rgba, process=False)
    return trimesh.Trimesh(v, f, process=False)


_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def _set_buffer_view_targets(glb: bytes) -> bytes:
    """Set ``bufferView.target`` for vertex / index data (the Khronos validator hints when it is missing).

    Patches only the JSON chunk of the GLB so the binary chunk stays byte-for-byte what trimesh wrote (pygltflib's
    ``save_to_bytes`` would re-pack the buffers).
    """
    magic, version, _ = struct.unpack_from("<4sII", glb, 0)
    json_len, json_type = struct.unpack_from("<I4s", glb, 12)
    if magic != b"glTF" or json_type != b"JSON":
        raise ValueError("not a GLB with a leading JSON chunk")
    doc = json.loads(glb[20 : 20 + json_len])
    views, accessors = doc.get("bufferViews", []), doc.get("accessors", [])
    for m in doc.get("meshes", []):
        for prim in m.get("primitives", []):
            refs = [(a, _ARRAY_BUFFER) for a in prim.get("attributes", {}).values()]
            if "indices" in prim:
                refs.append((prim["indices"], _ELEMENT_ARRAY_BUFFER))
            for acc, target in refs:
                view = accessors[acc].get("bufferView")
                if view is not None:
                    views[view]["target"] = target
    body = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    body += b" " * (-len(body) % 4)  # chunks are 4-byte aligned; JSON pads with spaces
    rest = glb[20 + json_len :]  # the BIN chunk (header included), unchanged
    total = 12 + 8 + len(body) + len(rest)
    return struct.pack("<4sII", magic, version, total) + struct.pack("<I4s", len(body), b"JSON") + body + rest


def save_glb(mesh: TexturedMesh, path: str | os.PathLike) -> Path:
    """Write ``mesh`` as a binary glTF to ``path`` atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    data = trimesh.exchange.gltf.export_glb(trimesh.Scene(to_trimesh(mesh)), include_normals=True)
    data = _set_buffer_view_targets(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _material_texture(material) -> np.ndarray | None:
    """(H, W, 3) float image of a trimesh material's base colour texture, or None."""
    image = getattr(material, "baseColorTexture", None)
    if image is None:
        image = getattr(material, "image", None)
    if image is None:
        return None
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _visual_colours(geom: trimesh.Trimesh) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(uv, texture, vertex_colors) of one geometry, each possibly None."""
    visual = geom.visual
    if isinstance(visual, trimesh.visual.TextureVisuals):
        texture = _material_texture(visual.material)
        if visual.uv is not None and texture is not None:
            return np.asarray(visual.uv, np.float64), texture, None
        factor = getattr(visual.material, "baseColorFactor", None)
        if factor is not None:  # untextured PBR material: its constant colour as vertex colours
            rgb = np.asarray(factor, np.float32)[:3] / (255.0 if np.asarray(factor).dtype == np.uint8 else 1.0)
            return None, None, np.tile(rgb, (len(geom.vertices), 1))
        return None, None, None
    if isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind == "vertex":
        return None, None, np.asarray(visual.vertex_colors, np.float32)[:, :3] / 255.0
    return None, None, None


def load_glb(path: str | os.PathLike) -> TexturedMesh:
    """Load any GLB/glTF: all mesh geometry of the scene with node transforms applied, concatenated into one mesh.

    A single textured geometry keeps uv + texture (float32 (H, W, 3) in [0, 1], alpha dropped); several textured
    geometries are merged by trimesh (which packs their textures into one atlas); otherwise vertex colours are kept
    when every part has some. Base colour factors multiplying a texture are ignored.
    """
    scene = trimesh.load(str(path), force="scene", process=False)
    geoms = [g for g in scene.dump(concatenate=False) if isinstance(g, trimesh.Trimesh) and len(g.faces) > 0]
    if not geoms:
        raise ValueError(f"{path}: no triangle geometry")
    parts = [_visual_colours(g) for g in geoms]
    textured = all(p[1] is not None for p in parts)
    if len(geoms) > 1 and textured:
        merged = trimesh.util.concatenate(geoms)  # packs the materials' textures into one image
        geoms, parts = [merged], [_visual_colours(merged)]
        textured = parts[0][1] is not None
    offsets = np.cumsum([0] + [len(g.vertices) for g in geoms[:-1]])
    verts = np.concatenate([g.vertices for g in geoms])
    faces = np.concatenate([g.faces + o for g, o in zip(geoms, offsets)])
    uv = texture = colours = None
    if textured and len(geoms) == 1:
        uv, texture, _ = parts[0]
    elif all(p[2] is not None for p in parts):
        colours = np.concatenate([p[2] for p in parts])
    as_t = lambda a: None if a is None else torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    return TexturedMesh(
        vertices=as_t(verts), faces=torch.as_tensor(faces, dtype=torch.int64), uv=as_t(uv), texture=as_t(texture),
        vertex_colors=as_t(colours),
    )
