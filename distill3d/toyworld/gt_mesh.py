"""Ground-truth meshes of toy-world objects (for export and for Chamfer/silhouette comparisons)."""

from __future__ import annotations

from distill3d.mesh.extract import extract_isosurface, sample_grid
from distill3d.mesh.types import TexturedMesh
from distill3d.mesh.uv import bake_texture, unwrap
from distill3d.toyworld import sdf as sdfs
from distill3d.toyworld.vocab import ObjectSpec


def gt_mesh(spec: ObjectSpec, resolution: int = 128, texture_size: int = 512) -> TexturedMesh:
    """Marching cubes on the analytic SDF, UV-unwrapped, with the exact albedo (stripes, face) baked into the
    texture. ``texture_size=0`` gives vertex colours instead of a texture."""
    values = sample_grid(lambda p: sdfs.sdf(spec, p), resolution, bound=1.0)
    mesh = extract_isosurface(values, level=0.0, bound=1.0, inside="below", keep_largest=True)
    if texture_size <= 0:
        mesh.vertex_colors = sdfs.albedo(spec, mesh.vertices)
        return mesh
    return bake_texture(unwrap(mesh), lambda p: sdfs.albedo(spec, p), size=texture_size)
