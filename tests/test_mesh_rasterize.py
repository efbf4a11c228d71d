"""The torch rasteriser against an independent brute-force ray caster (camera_rays + ray/triangle intersection)."""

import torch

from distill3d.cameras import camera_rays, spherical_cameras, world_to_clip
from distill3d.mesh.rasterize import differentiable_bary, interpolate, rasterize


def random_soup(n_faces: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping random triangles around the origin (so many pixels see several faces: occlusion)."""
    g = torch.Generator().manual_seed(seed)
    centres = (torch.rand(n_faces, 1, 3, generator=g) - 0.5) * 1.2
    verts = (centres + 0.45 * torch.randn(n_faces, 3, 3, generator=g)).reshape(-1, 3)
    faces = torch.arange(3 * n_faces).reshape(n_faces, 3)
    return verts, faces


def brute_force(verts, faces, cams, size):
    """Per pixel x per face Moller-Trumbore in world space (float64): hits per pixel, nearest hit's face id,
    barycentrics, z-depth."""
    o, d = camera_rays(cams, size)
    o, d = o.double().reshape(len(cams), -1, 1, 3), d.double().reshape(len(cams), -1, 1, 3)
    v = verts.double()[faces]  # (F, 3, 3)
    e1, e2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
    p = torch.linalg.cross(d.expand(-1, -1, len(faces), -1), e2.expand_as(d.expand(-1, -1, len(faces), -1)), dim=-1)
    det = (p * e1).sum(-1)
    s = o - v[:, 0]
    u = (s * p).sum(-1) / det
    q = torch.linalg.cross(s.expand_as(p), e1.expand_as(p), dim=-1)
    w = (d * q).sum(-1) / det
    t = (e2 * q).sum(-1) / det
    hit = (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0)
    t = torch.where(hit, t, torch.inf)
    tmin, fid = t.min(-1)
    covered = torch.isfinite(tmin)
    gather = lambda x: x.gather(-1, fid[..., None]).squeeze(-1)  # noqa: E731
    ub, wb = gather(u), gather(w)
    bary = torch.stack([1 - ub - wb, ub, wb], -1)
    forward = -cams.c2w[:, :3, 2].double()  # camera looks along its -Z
    zdepth = tmin * (d.squeeze(2) * forward[:, None]).sum(-1)
    B = len(cams)
    return (
        hit.sum(-1).reshape(B, size, size),
        torch.where(covered, fid, -1).reshape(B, size, size),
        (bary * covered[..., None]).reshape(B, size, size, 3),
        torch.where(covered, zdepth, 0.0).reshape(B, size, size),
    )


def test_matches_brute_force_with_occlusion():
    verts, faces = random_soup(24, seed=0)
    cams = spherical_cameras([0.0, 130.0, 250.0], [10.0, -30.0, 70.0], radius=3.0, fov=45.0)
    size = 24
    frags = rasterize(world_to_clip(verts, cams), faces, size)
    n_hits, ref_id, ref_bary, ref_depth = brute_force(verts, faces, cams, size)
    # Pixels whose centre lies (numerically) on an edge may legitimately differ; allow at most one per image.
    agree = frags.face_id == ref_id
    assert (~agree).sum() <= len(cams), (~agree).sum()
    assert frags.mask.float().mean() > 0.2  # the test actually covers pixels...
    # ...with occlusion: many covered pixels have more than one face along their ray.
    assert (n_hits >= 2).sum() > 100
    m = agree & (ref_id >= 0)
    assert torch.allclose(frags.bary[m].double(), ref_bary[m], atol=1e-4)
    assert torch.allclose(frags.depth[m].double(), ref_depth[m], rtol=1e-4)
    assert (frags.depth[~frags.mask] == 0).all() and (frags.bary[~frags.mask] == 0).all()


def test_occlusion_order_and_orientation():
    """Two parallel squares: the one nearer the camera wins; +X appears on the right, +Y at the top."""
    sq = torch.tensor([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    near = torch.cat([sq + torch.tensor([0.3, 0.0]), torch.full((4, 1), 0.5)], 1)  # z = 0.5, shifted +X
    far = torch.cat([sq, torch.full((4, 1), -0.5)], 1)
    verts = torch.cat([far, near])
    quad = torch.tensor([[0, 1, 2], [0, 2, 3]])
    faces = torch.cat([quad, quad + 4])  # faces 0,1 far; 2,3 near
    cams = spherical_cameras([0.0], [0.0], radius=3.0, fov=40.0)
    frags = rasterize(world_to_clip(verts, cams), faces, 32)
    centre_id = frags.face_id[0, 16, 16]
    assert centre_id >= 2  # near square in front
    row = frags.face_id[0, 16]
    covered = (row >= 0).nonzero().squeeze(1)
    # Near square is shifted towards +X = right: the rightmost covered pixel belongs to it, the leftmost to the far one.
    assert row[covered[-1]] >= 2 and row[covered[0]] < 2
    # Put a vertex attribute = world y; top rows (row 0 = top) must have larger y than bottom rows.
    y = interpolate(verts[:, 1:2], frags, faces)[0, :, 16, 0]
    rows = (frags.face_id[0, :, 16] >= 0).nonzero().squeeze(1)
    assert y[rows[0]] > 0.3 and y[rows[-1]] < -0.3


def test_behind_camera_culled_and_backface_culling():
    verts = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0],
                          [-0.5, -0.5, 5.0], [0.5, -0.5, 5.0], [0.0, 0.5, 5.0]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])  # CCW seen from +Z; the second is behind a camera at z = 3
    cams = spherical_cameras([0.0], [0.0], radius=3.0)
    frags = rasterize(world_to_clip(verts, cams), faces, 16)
    assert set(frags.face_id.unique().tolist()) == {-1, 0}
    assert (rasterize(world_to_clip(verts, cams), faces, 16, cull_backfaces=True).face_id == frags.face_id).all()
    back = spherical_cameras([180.0], [0.0], radius=3.0)  # sees face 0 from behind (clockwise)
    assert (rasterize(world_to_clip(verts, back), faces, 16, cull_backfaces=True).face_id == -1).all()
    assert (rasterize(world_to_clip(verts, back), faces, 16).face_id == 0).any()


def test_chunking_does_not_change_result():
    verts, faces = random_soup(30, seed=1)
    cams = spherical_cameras([20.0, 200.0], [5.0, 40.0], radius=3.0)
    clip = world_to_clip(verts, cams)
    a = rasterize(clip, faces, 32)
    b = rasterize(clip, faces, 32, chunk=97)
    assert (a.face_id == b.face_id).all() and torch.equal(a.bary, b.bary) and torch.equal(a.depth, b.depth)


def test_interpolate_gradcheck():
    verts, faces = random_soup(4, seed=2)
    cams = spherical_cameras([0.0, 90.0], [0.0, 20.0], radius=3.0)
    frags = rasterize(world_to_clip(verts, cams), faces, 6)
    frags.bary = frags.bary.double()
    assert frags.mask.any()
    shared = torch.randn(len(verts), 2, dtype=torch.float64, requires_grad=True)
    per_view = torch.randn(2, len(verts), 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(a, frags, faces), (shared,))
    assert torch.autograd.gradcheck(lambda a: interpolate(a, frags, faces), (per_view,))


def test_differentiable_bary_matches_and_has_position_gradients():
    verts, faces = random_soup(4, seed=3)
    cams = spherical_cameras([0.0], [10.0], radius=3.0)
    clip = world_to_clip(verts, cams).double()
    frags = rasterize(clip, faces, 8)
    assert frags.mask.any()
    bary = differentiable_bary(clip, faces, frags)
    assert torch.allclose(bary, frags.bary)
    # Gradcheck w.r.t. clip coordinates with visibility held fixed.
    clip_var = clip.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: differentiable_bary(c, faces, frags), (clip_var,))
