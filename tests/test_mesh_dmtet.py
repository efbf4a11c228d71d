"""DMTet scene: construction from a density field (automatic level, box, SDF), rendering against ground truth,
silhouette-driven optimisation of the SDF and deformation, regularisers, export, and the empty-surface error."""

import math

import pytest
import torch
import trimesh

from analytic_fields import SdfDensityField
from distill3d import shading
from distill3d.cameras import ring_cameras, spherical_cameras
from distill3d.fields.nerf import RadianceField
from distill3d.mesh.dmtet import DMTetInit, DMTetScene, EmptySurfaceError
from distill3d.metrics.silhouette import iou
from distill3d.toyworld.render import render_gt
from distill3d.toyworld.vocab import ObjectSpec

FAST = dict(sample_resolution=48, match_views=4, match_size=48)


def sphere_scene(resolution: int = 20, **kw) -> DMTetScene:
    field = SdfDensityField(ObjectSpec("sphere", "red"), peak=1000.0, width=0.003)
    return DMTetScene.from_field(field, DMTetInit(resolution=resolution, **{**FAST, **kw}))


def test_built_from_a_sphere_field_it_renders_the_ground_truth_silhouette():
    """At the density level of the zero SDF (500 = peak / 2) the DMTet surface is the sphere."""
    scene = sphere_scene(24, level=500.0)
    info = scene.init_info
    # tight box of the r = 0.6 sphere plus 10% of its extent on each side, cube cells
    assert info["box_max"][0] == pytest.approx(0.6 * 1.2, abs=0.03) and info["resolution"] == [24, 24, 24]
    cams = ring_cameras(4, 15.0, with_top_bottom=True)
    out = scene.render(cams, 64, shading="albedo", background=torch.ones(len(cams), 3))
    gt = render_gt(ObjectSpec("sphere", "red"), cams, 64, mode="albedo")
    assert iou(out["opacity"] > 0.5, gt["mask"] > 0.5).min() > 0.98
    assert (out["opacity"].sum() / gt["mask"].sum()).item() == pytest.approx(1.0, abs=0.02)  # coverage, not just IoU
    inside = (gt["mask"] > 0.5) & (out["opacity"] == 1.0)  # not blended with the background
    assert (out["rgb"][inside] - gt["rgb"][inside]).abs().max() < 1e-4  # the inherited colour: the field's albedo
    m = scene.export_mesh()
    tm = trimesh.Trimesh(m.vertices.numpy(), m.faces.numpy(), process=False)
    assert tm.is_watertight and tm.is_winding_consistent and tm.volume > 0
    assert tm.volume == pytest.approx(4 / 3 * math.pi * 0.6**3, rel=0.03)


def test_the_automatic_level_matches_the_fields_own_silhouette():
    """"auto" picks the candidate level whose mesh matches the field's rendered opacity; for this soft-edged field
    that silhouette lies ~0.015 outside the SDF's zero (so the ground truth is matched less closely)."""
    field = SdfDensityField(ObjectSpec("sphere", "red"), peak=1000.0, width=0.003)
    scene = DMTetScene.from_field(field, DMTetInit(resolution=24, sample_resolution=96, match_views=4, match_size=48))
    info = scene.init_info
    assert info["level"] in (2.0, 5.0, 10.0, 20.0, 40.0) and info["candidate_iou"][str(info["level"])] > 0.95
    cams = ring_cameras(4, 15.0, with_top_bottom=True)
    out = scene.render(cams, 64, shading="albedo", background=torch.ones(len(cams), 3))
    from distill3d.render.volume import render_field

    target = render_field(field, cams, 64, stratified=False)["opacity"]
    assert iou(out["opacity"] > 0.5, target > 0.5).min() > 0.95
    assert iou(out["opacity"] > 0.5, render_gt(ObjectSpec("sphere"), cams, 64)["mask"] > 0.5).min() > 0.93


def test_render_shadings_and_gradients_reach_every_parameter_group():
    field = RadianceField()  # DreamFusion's density blob: a ball of radius ~0.4
    scene = DMTetScene.from_field(field, DMTetInit(resolution=12, sample_resolution=32, match_views=2, match_size=32))
    assert set(scene.param_groups()) == {"sdf", "deform", "encoding", "mlp"}
    assert all(p is not q for p, q in zip(scene.field.parameters(), field.parameters()))  # the coarse field is copied
    cams = spherical_cameras([0.0, 120.0], [10.0, 30.0], radius=2.6, fov=40.0)
    bg = torch.tensor([[0.2, 0.3, 0.4], [1.0, 1.0, 1.0]])
    light = shading.headlight_directions(cams)
    outs = {m: scene.render(cams, 32, shading=m, light_dir=light, background=bg, ambient=0.3)
            for m in ("albedo", "lambertian", "textureless", "normal")}
    for out in outs.values():
        assert out["rgb"].shape == (2, 32, 32, 3) and out["opacity"].shape == (2, 32, 32)
        assert out["normal"].shape == (2, 32, 32, 3) and out["depth"].shape == (2, 32, 32)
        assert 0.0 <= float(out["opacity"].detach().min()) and float(out["opacity"].detach().max()) <= 1.0
        empty = out["opacity"] == 0
        assert torch.allclose(out["rgb"][empty], bg[:, None, None].expand(2, 32, 32, 3)[empty])
    full = outs["albedo"]["opacity"] == 1
    n = outs["albedo"]["normal"]
    assert torch.allclose(outs["normal"]["rgb"][full], ((n + 1) / 2)[full], atol=1e-6)
    assert torch.allclose(outs["textureless"]["rgb"][full], shading.textureless(n, light[:, None, None], 0.3)[full],
                          atol=1e-6)
    assert torch.allclose(outs["lambertian"]["rgb"][full],
                          shading.lambertian(outs["albedo"]["rgb"], n, light[:, None, None], 0.3)[full], atol=1e-5)
    out = outs["lambertian"]
    loss = out["rgb"].mean() + out["opacity"].mean() + sum(scene.losses(out, None).values())
    loss.backward()
    for name, params in scene.param_groups().items():
        g = sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)
        assert math.isfinite(g) and g > 0, name
    scene.step_begin(0, None)


def test_optimising_sdf_and_deformation_moves_the_silhouette_to_a_target():
    """Start from the sphere, fit the silhouettes of the cube: a few dozen Adam steps on the SDF and deformation."""
    field = SdfDensityField(ObjectSpec("sphere"), peak=1000.0, width=0.003)
    scene = DMTetScene.from_field(field, DMTetInit(resolution=16, level=500.0, sample_resolution=48))
    cams = spherical_cameras([0, 90, 45, 180, 270, 0], [10, 10, 40, -20, 0, 89], radius=2.6, fov=40.0)
    target = render_gt(ObjectSpec("cube"), cams, 48)["mask"]
    bg = torch.ones(len(cams), 3)
    opt = torch.optim.Adam([{"params": [scene.sdf], "lr": 1e-2}, {"params": [scene.deform], "lr": 5e-2}])
    first = None
    for _ in range(30):
        out = scene.render(cams, 48, shading="albedo", background=bg)
        loss = ((out["opacity"] - target) ** 2).mean()
        if first is None:
            first = (float(loss.detach()), float(iou(out["opacity"].detach() > 0.5, target > 0.5).mean()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = scene.render(cams, 48, shading="albedo", background=bg)
    last = (float(((out["opacity"] - target) ** 2).mean()), float(iou(out["opacity"] > 0.5, target > 0.5).mean()))
    assert first[1] < 0.85 and last[1] > 0.97
    assert last[0] < 0.15 * first[0]
    assert scene.deform.abs().max() > 0  # both parameter sets moved
    corner = scene.export_mesh().vertices.abs().amax(-1).max()
    assert corner > 0.42  # the sphere (r = 0.6) grew corners towards the cube's (0.45, 0.45, 0.45)


def test_empty_level_raises_a_one_line_error():
    field = SdfDensityField(ObjectSpec("sphere"), peak=100.0, width=0.003)
    with pytest.raises(EmptySurfaceError) as err:
        DMTetScene.from_field(field, DMTetInit(resolution=8, level=5000.0, sample_resolution=24))
    msg = str(err.value)
    assert "\n" not in msg and "5000" in msg and "100" in msg and err.value.level == 5000.0
    assert isinstance(err.value, ValueError)
    empty = SdfDensityField(ObjectSpec("sphere"), peak=0.0)
    with pytest.raises(EmptySurfaceError, match="no surface at any candidate"):
        DMTetScene.from_field(empty, DMTetInit(resolution=8, sample_resolution=16, match_views=2, match_size=16))


def test_a_surface_that_vanishes_during_optimisation_is_named_not_a_crash():
    scene = sphere_scene(8, level=500.0)
    with torch.no_grad():
        scene.sdf.fill_(0.5)
    with pytest.raises(EmptySurfaceError, match="empty"):
        scene.render(ring_cameras(2), 16, shading="albedo", background=torch.ones(2, 3))


def test_regularisers_are_finite_with_zero_area_faces_and_see_roughness():
    scene = sphere_scene(12, level=500.0)
    out = scene.render(ring_cameras(1), 16, shading="albedo", background=torch.ones(1, 3))
    smooth = scene.losses(out)
    with torch.no_grad():  # grid vertices exactly on the surface: zero-area faces
        scene.sdf[scene.sdf.abs() < 0.02] = 0.0
        scene.deform.normal_(0.0, 2.0, generator=torch.Generator().manual_seed(0))
    rough = scene.losses(scene.render(ring_cameras(1), 16, shading="albedo", background=torch.ones(1, 3)))
    assert rough["loss_normal_consistency"] > 2 * smooth["loss_normal_consistency"]
    assert rough["loss_laplacian"] > smooth["loss_laplacian"]
    sum(rough.values()).backward()
    g = scene.sdf.grad.abs().max() + scene.deform.grad.abs().max()
    assert torch.isfinite(g) and g < 1e3


def test_density_sdf_init_and_save_load_round_trip(tmp_path):
    field = RadianceField()
    scene = DMTetScene.from_field(field, DMTetInit(resolution=10, level=1.0, sample_resolution=32, sdf="density"))
    assert scene.sdf.abs().max() <= 1.0
    with torch.no_grad():
        scene.deform.uniform_(-1, 1)
    scene.save(tmp_path)
    again = DMTetScene.load(tmp_path)
    a, b = scene.export_mesh(vertex_colors=True), again.export_mesh(vertex_colors=True)
    assert torch.equal(a.faces, b.faces) and torch.allclose(a.vertices, b.vertices)
    assert torch.allclose(a.vertex_colors, b.vertex_colors)


def test_regulariser_values_on_known_meshes():
    from distill3d.mesh.regularizers import laplacian_smoothness, normal_consistency

    tet = trimesh.Trimesh([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]],
                          [[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]])
    tet.fix_normals()
    v, f = torch.tensor(tet.vertices, dtype=torch.float32), torch.tensor(tet.faces)
    # regular tetrahedron: adjacent outward normals at cos = -1/3; each vertex minus its 3 neighbours' mean = 4 v / 3
    assert float(normal_consistency(v, f)) == pytest.approx(4 / 3, rel=1e-5)
    assert float(laplacian_smoothness(v, f)) == pytest.approx(16 / 9 * 3, rel=1e-5)
    plane = trimesh.creation.box(extents=[1, 1, 1e-9])
    grid = trimesh.remesh.subdivide(plane.vertices, plane.faces)
    top = [i for i, t in enumerate(grid[1]) if (grid[0][t][:, 2] > 0).all()]
    v, f = torch.tensor(grid[0], dtype=torch.float32), torch.tensor(grid[1][top])
    assert float(normal_consistency(v, f)) == pytest.approx(0.0, abs=1e-6)  # flat


def test_runs_in_the_distillation_loop_and_resumes_from_its_checkpoint(tmp_path):
    """The Scene interface as optimize.loop.distill uses it: groups "sdf"/"deform" at their own learning rates,
    regularisers weighted by extra_lambdas, checkpoints (grid buffers are rebuilt, not saved) and resume."""
    from distill3d.guidance.sds import SDSConfig
    from distill3d.mesh.dmtet_init import box_grid
    from distill3d.optimize.config import DistillConfig
    from distill3d.optimize.loop import distill
    from test_guidance_sds import LinearPrior

    def scene():
        grid = box_grid(torch.full((3,), -0.6), torch.full((3,), 0.6), 10, 0.1)
        torch.manual_seed(0)
        return DMTetScene(grid, grid.vertices.norm(dim=-1) - 0.6, RadianceField())

    cfg = DistillConfig(steps=6, checkpoint_every=3, render_size=16, albedo_only_fraction=0.3, lambda_opacity=0.0,
                        shading_probs={"albedo": 1.0, "lambertian": 1.0, "textureless": 1.0},
                        lr_groups={"sdf": 1e-2, "deform": 1e-2},
                        extra_lambdas={"normal_consistency": 10.0, "laplacian": 1.0}, max_grad_norm=1.0)
    run = dict(prompt="a red cube", cfg=cfg, seed=0, progress=False, guidance=SDSConfig(guidance_scale=10.0))
    ref = scene()
    hist = distill([ref], LinearPrior(), work_dir=tmp_path / "ref", **run)
    assert set(hist["losses"]) == {"loss_sds", "loss_normal_consistency", "loss_laplacian"}
    assert float((ref.sdf - scene().sdf).detach().abs().max()) > 1e-3  # the SDF moved

    class Stop(Exception):
        pass

    def die(step, info):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        distill([scene()], LinearPrior(), work_dir=tmp_path / "run", callback=die, **run)
    again = scene()
    distill([again], LinearPrior(), work_dir=tmp_path / "run", **run)
    assert torch.allclose(again.sdf, ref.sdf, atol=1e-6) and torch.allclose(again.deform, ref.deform, atol=1e-6)
