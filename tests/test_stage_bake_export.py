"""bake_texture (a field's albedo into a UV atlas), export_asset (any textured mesh -> asset, carrying the mesh
before a texture refinement) and evaluate scoring that "before" mesh."""

from __future__ import annotations

import json

import pytest
import torch

from distill3d.mesh.gltf import load_glb, save_glb
from distill3d.mesh.types import TexturedMesh
from distill3d.toyworld.gt_mesh import gt_mesh
from distill3d.toyworld.vocab import parse_prompt
from stages.core.execute import execute
from stages.core.params import load_params
from stages.core.protocol import MESH_BEFORE, StageError, get_stage

PROMPT = "a orange sphere"


class HalfAndHalf(torch.nn.Module):
    """A stand-in colour field: red where x > 0, blue elsewhere."""

    bound = 1.0

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
        return torch.where(x[:, :1] > 0, red, blue)


@pytest.fixture()
def plain_mesh(tmp_path):
    """A sphere mesh with neither texture nor vertex colours, as extract_mesh writes."""
    m = gt_mesh(parse_prompt(PROMPT), resolution=24, texture_size=0)
    d = tmp_path / "mesh"
    save_glb(TexturedMesh(vertices=m.vertices, faces=m.faces), d / "mesh.glb")
    return d


def _run(name, inputs, out, **params):
    module = get_stage(name)
    return execute(module, load_params(module, overrides=params), inputs, out)


def test_bake_texture_bakes_the_field_albedo_into_an_atlas(tmp_path, plain_mesh, monkeypatch) -> None:
    monkeypatch.setattr("distill3d.fields.loading.load_field", lambda path: HalfAndHalf())
    field_dir = tmp_path / "field"
    field_dir.mkdir()
    (field_dir / "field.json").write_text("{}")
    out = _run("bake_texture", {"mesh": plain_mesh, "nerf": field_dir}, tmp_path / "baked", texture_size=64)
    mesh = load_glb(out / "mesh.glb")
    assert mesh.uv is not None and mesh.texture is not None and mesh.texture.shape == (64, 64, 3)
    from distill3d.mesh.render import sample_texture

    colours = sample_texture(mesh.texture, mesh.uv)  # per vertex: red on the +x side, blue on the other
    right, left = mesh.vertices[:, 0] > 0.1, mesh.vertices[:, 0] < -0.1
    assert (colours[right, 0] > 0.9).float().mean() > 0.95 and (colours[left, 2] > 0.9).float().mean() > 0.95
    assert json.loads((out / "manifest.json").read_text())["extra"]["texture_source"] == "field"


def test_bake_and_export_refuse_a_mesh_without_colours_naming_the_fix(tmp_path, plain_mesh) -> None:
    with pytest.raises(StageError, match="--in nerf=DIR"):
        _run("bake_texture", {"mesh": plain_mesh}, tmp_path / "baked")
    with pytest.raises(StageError, match="bake one first"):
        _run("export_asset", {"mesh": plain_mesh}, tmp_path / "asset")
    assert not (tmp_path / "baked").exists() and not (tmp_path / "asset").exists()


def test_export_carries_the_mesh_before_refinement_and_evaluate_scores_both(tmp_path) -> None:
    spec = parse_prompt(PROMPT)
    truth = gt_mesh(spec, resolution=32, texture_size=0)  # vertex colours: the right colour
    grey = TexturedMesh(vertices=truth.vertices, faces=truth.faces,
                        vertex_colors=torch.full_like(truth.vertices, 0.5))
    refined = tmp_path / "refined"
    save_glb(truth, refined / "mesh.glb")
    save_glb(grey, refined / MESH_BEFORE)
    small = {"turntable_frames": 2, "turntable_size": 32, "views": 2, "views_size": 32}
    asset = _run("export_asset", {"mesh": refined}, tmp_path / "asset", **small)
    assert (asset / MESH_BEFORE).read_bytes() == (refined / MESH_BEFORE).read_bytes()
    metrics_dir = _run("evaluate", {"asset": asset}, tmp_path / "metrics", prompt=PROMPT, size=32, n_ring=2)
    metrics = json.loads((metrics_dir / "metrics.json").read_text())
    assert metrics["before"]["colour_error_lab"] > metrics["colour_error_lab"] + 10
    assert metrics["texture_improvement"] == pytest.approx(
        metrics["before"]["colour_error_lab"] - metrics["colour_error_lab"])

    plain = _run("export_asset", {"mesh": tmp_path / "asset"}, tmp_path / "asset2", **small)
    save_glb(truth, tmp_path / "only" / "mesh.glb")
    only = _run("export_asset", {"mesh": tmp_path / "only"}, tmp_path / "asset3", **small)
    assert (plain / MESH_BEFORE).is_file() and not (only / MESH_BEFORE).is_file()
    only_metrics = json.loads((_run("evaluate", {"asset": only}, tmp_path / "m3", prompt=PROMPT, size=32,
                                    n_ring=2) / "metrics.json").read_text())
    assert "before" not in only_metrics and "texture_improvement" not in only_metrics
