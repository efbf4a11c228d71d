"""Automatic iso-level choice for density fields, and cheap prompt checks before a prior is loaded."""

import pytest
import torch

from analytic_fields import SdfDensityField
from distill3d.mesh.extract import extract_isosurface, sample_grid
from distill3d.cameras import ring_cameras
from distill3d.mesh.level import choose_level
from distill3d.mesh.render import render_mesh
from distill3d.metrics.silhouette import iou
from distill3d.toyworld.render import render_gt
from distill3d.toyworld.vocab import ObjectSpec
from stages.core.protocol import StageError
from stages.shared.prior_check import check_prompt_for_prior


def test_choose_level_recovers_the_surface_of_a_sharp_field():
    """For a sharp field the rendered silhouette is the surface, so the chosen mesh is the ground-truth shape;
    a level far outside the surface (a fat mesh) is rejected."""
    spec = ObjectSpec("cylinder")
    field = SdfDensityField(spec, peak=1000.0, width=0.01)
    values = sample_grid(field.density, 48)
    fat = 1000.0 * float(torch.sigmoid(torch.tensor(-0.15 / 0.01)))  # the level set 0.15 outside the surface
    level, scores = choose_level(field, values, [fat, 500.0], n_views=4, size=48)
    assert level == 500.0 and scores["500.0"] > scores[str(fat)]
    mesh = extract_isosurface(values, level, inside="above")
    assert abs(float(mesh.vertices[:, [0, 2]].norm(dim=-1).max()) - 0.45) < 0.03
    cams = ring_cameras(4)
    assert iou(render_mesh(mesh, cams, 48)["mask"], render_gt(spec, cams, 48)["mask"]).min() > 0.9


def test_choose_level_refuses_an_empty_field():
    field = SdfDensityField(ObjectSpec("sphere"), peak=0.0)
    with pytest.raises(ValueError, match="empty"):
        choose_level(field, sample_grid(field.density, 24), [5.0, 10.0], n_views=2, size=16)


def test_choose_level_meshes_a_faint_field_below_every_candidate():
    """A short run's field can peak below every candidate level: fractions of its peak are tried instead."""
    field = SdfDensityField(ObjectSpec("sphere"), peak=1.0)
    values = sample_grid(field.density, 24)
    level, scores = choose_level(field, values, [5.0, 10.0], n_views=2, size=16)
    assert 0.0 < level < 1.0 and sorted(map(float, scores)) == [0.25, 0.5, 0.75] and min(scores.values()) > 0.0
    mesh = extract_isosurface(values, level, inside="above")
    assert len(mesh.faces) > 0 and float(mesh.vertices.norm(dim=-1).max()) < 0.8  # a ball inside the sphere's bound


def test_prompt_checks_name_the_problem(tmp_path):
    (tmp_path / "prior.json").write_text('{"kind": "toy"}')
    check_prompt_for_prior("a red cube", tmp_path)
    with pytest.raises(StageError, match="dragon"):
        check_prompt_for_prior("a red dragon", tmp_path)
    with pytest.raises(StageError, match="empty prompt"):
        check_prompt_for_prior("  ", tmp_path)
    check_prompt_for_prior("a photo of a dragon", tmp_path / "sd")  # not a toy prior: any words


def test_choose_level_meshes_a_translucent_field_by_soft_iou():
    """Opacity below 0.5 everywhere (a 60-step run from a weak blob) is matched by soft IoU instead of failing."""
    field = SdfDensityField(ObjectSpec("sphere"), peak=0.5)  # opacity at most 0.45 through the centre
    values = sample_grid(field.density, 24)
    level, scores = choose_level(field, values, [0.1, 0.3, 1.0], n_views=2, size=16)
    assert level in (0.1, 0.3) and scores["1.0"] == 0.0 and scores[str(level)] > 0.2
