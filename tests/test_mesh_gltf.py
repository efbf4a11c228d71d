"""GLB export/import: round trips (texture, vertex colours, plain), scenes with transforms, Khronos validation."""

import numpy as np
import pytest
import torch
import trimesh

from distill3d.cameras import spherical_cameras
from distill3d.mesh.gltf import load_glb, save_glb, to_trimesh
from distill3d.mesh.render import render_mesh
from distill3d.mesh.types import TexturedMesh
from distill3d.mesh.uv import bake_texture, unwrap
from gltf_validator import issue_summary, validate_glb, validator_available

needs_validator = pytest.mark.skipif(
    not validator_available(), reason="run `cd tools/gltf && npm install` (node + gltf-validator) first"
)


def sphere(subdivisions: int = 2) -> TexturedMesh:
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.7)
    return TexturedMesh(torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.int64))


def textured_sphere() -> TexturedMesh:
    return bake_texture(unwrap(sphere(), resolution=64), lambda p: (p / 0.7 + 1) / 2, size=64)


def coloured_sphere() -> TexturedMesh:
    m = sphere()
    m.vertex_colors = (m.vertices / 0.7 + 1) / 2
    return m


def test_textured_round_trip_renders_the_same(tmp_path):
    mesh = textured_sphere()
    path = save_glb(mesh, tmp_path / "sub" / "asset.glb")
    assert path.exists() and not list(path.parent.glob(".*.tmp"))  # atomic write left no temp file
    back = load_glb(path)
    assert torch.equal(back.faces, mesh.faces)
    assert torch.allclose(back.vertices, mesh.vertices, atol=1e-6)
    assert torch.allclose(back.uv, mesh.uv, atol=1e-6)
    assert back.texture.shape == mesh.texture.shape and back.texture.dtype == torch.float32
    assert (back.texture - mesh.texture).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNG quantisation only
    cams = spherical_cameras([0.0, 90.0, 200.0], [20.0, 0.0, -30.0], radius=2.6)
    a = render_mesh(mesh, cams, 32, mode="albedo")["rgb"]
    b = render_mesh(back, cams, 32, mode="albedo")["rgb"]
    assert (a - b).abs().max() < 0.01  # uv orientation survives the glTF t = 1 - v flip


def test_vertex_colour_and_plain_round_trip(tmp_path):
    mesh = coloured_sphere()
    back = load_glb(save_glb(mesh, tmp_path / "c.glb"))
    assert back.texture is None and back.uv is None
    assert (back.vertex_colors - mesh.vertex_colors).abs().max() <= 0.5 / 255 + 1e-6
    plain = load_glb(save_glb(sphere(), tmp_path / "p.glb"))
    assert plain.vertex_colors is None and plain.texture is None and len(plain.faces) == len(sphere().faces)


def test_overwrite_is_atomic_replacement(tmp_path):
    path = tmp_path / "a.glb"
    save_glb(sphere(1), path)
    save_glb(coloured_sphere(), path)
    assert load_glb(path).vertex_colors is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.glb"]


def test_load_scene_applies_transforms_and_merges_textures(tmp_path):
    red = to_trimesh(bake_texture(unwrap(sphere(1), 32), lambda p: torch.tensor([1.0, 0, 0]).expand_as(p), 32))
    blue = to_trimesh(bake_texture(unwrap(sphere(1), 32), lambda p: torch.tensor([0, 0, 1.0]).expand_as(p), 32))
    scene = trimesh.Scene()
    for geom, dx in ((red, 1.0), (blue, -1.0)):
        T = np.eye(4)
        T[0, 3] = dx
        scene.add_geometry(geom, transform=T)
    path = tmp_path / "scene.glb"
    path.write_bytes(scene.export(file_type="glb"))
    mesh = load_glb(path)
    assert mesh.vertices[:, 0].max().item() == pytest.approx(1.7, abs=1e-5)
    assert mesh.vertices[:, 0].min().item() == pytest.approx(-1.7, abs=1e-5)
    rgb = render_mesh(mesh, spherical_cameras([0.0], [0.0], radius=4.0), 32, mode="albedo")["rgb"][0]
    assert torch.allclose(rgb[16, 24], torch.tensor([1.0, 0, 0]), atol=0.02)  # +X (red sphere) on the right
    assert torch.allclose(rgb[16, 8], torch.tensor([0, 0, 1.0]), atol=0.02)


@needs_validator
@pytest.mark.parametrize("kind", ["texture", "vertex_colors", "plain"])
def test_khronos_validator_reports_no_errors_or_warnings(tmp_path, kind):
    mesh = {"texture": textured_sphere, "vertex_colors": coloured_sphere, "plain": sphere}[kind]()
    report = validate_glb(save_glb(mesh, tmp_path / f"{kind}.glb"))
    issues = report["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issue_summary(report)
    assert issues["numHints"] == 0, issue_summary(report)  # bufferView targets are set
    info = report["info"]
    assert info["totalTriangleCount"] == len(mesh.faces)
    assert info["hasTextures"] == (kind == "texture")


@needs_validator
def test_validator_catches_a_broken_file(tmp_path):
    path = save_glb(sphere(1), tmp_path / "x.glb")
    data = bytearray(path.read_bytes())
    data[-40:] = b"\xff" * 40  # corrupt the tail of the binary buffer (NaN floats / out-of-range indices)
    path.write_bytes(bytes(data))
    assert validate_glb(path)["issues"]["numErrors"] > 0
