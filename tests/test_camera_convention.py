"""One camera convention: ground truth (sphere tracing), meshes (rasterisation) and fields (volume rendering) of the
same object line up pixel for pixel and agree on depth."""


from analytic_fields import SdfDensityField
from distill3d.cameras import ring_cameras, spherical_cameras
from distill3d.mesh.render import render_mesh
from distill3d.metrics.silhouette import iou
from distill3d.render.volume import render_field
from distill3d.toyworld.gt_mesh import gt_mesh
from distill3d.toyworld.render import render_gt
from distill3d.toyworld.vocab import ObjectSpec


def test_mesh_and_ground_truth_agree_on_silhouette_depth_and_colour():
    spec = ObjectSpec("cone", "green", face=True)
    cams = spherical_cameras([0.0, 70.0, 200.0], [10.0, 40.0, -5.0])
    gt = render_gt(spec, cams, 64, mode="albedo")
    mesh = render_mesh(gt_mesh(spec, resolution=96, texture_size=256), cams, 64, mode="albedo")
    assert iou(mesh["mask"], gt["mask"]).min() > 0.93
    both = (mesh["mask"] > 0.99) & (gt["mask"] > 0.99)
    assert (mesh["depth"][both] - gt["depth"][both]).abs().median() < 0.02
    assert (mesh["rgb"][both] - gt["rgb"][both]).abs().mean() < 0.05


def test_volume_renderer_and_ground_truth_agree():
    spec = ObjectSpec("torus", "blue")
    cams = ring_cameras(3, elevation=30.0)
    gt = render_gt(spec, cams, 32)
    vol = render_field(SdfDensityField(spec), cams, 32, n_samples=384, stratified=False)
    assert iou(vol["opacity"], gt["mask"]).min() > 0.9
    both = (vol["opacity"] > 0.99) & (gt["mask"] > 0.99)
    assert (vol["depth"][both] - gt["depth"][both]).abs().median() < 0.03
