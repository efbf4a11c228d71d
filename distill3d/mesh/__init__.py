"""Meshes: ``TexturedMesh``, torch rasteriser, rendering, marching cubes, UV unwrap/bake, GLB I/O.

Submodules are imported lazily (``from distill3d.mesh import render_mesh`` works) so that importing
``distill3d.mesh.types`` does not pull in trimesh, xatlas or PyMCubes.
"""

from __future__ import annotations

import importlib

from distill3d.mesh.types import TexturedMesh

_EXPORTS = {
    "Fragments": "rasterize", "rasterize": "rasterize", "interpolate": "rasterize",
    "differentiable_bary": "rasterize",
    "render_mesh": "render", "vertex_normals": "render", "sample_texture": "render",
    "sample_grid": "extract", "extract_isosurface": "extract",
    "unwrap": "uv", "bake_texture": "uv",
    "save_glb": "gltf", "load_glb": "gltf",
}

__all__ = ["TexturedMesh", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"distill3d.mesh.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'distill3d.mesh' has no attribute {name!r}")
