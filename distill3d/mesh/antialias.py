"""Analytic antialiasing of silhouette edges: the silhouette (visibility) gradients the rasteriser lacks.

The idea is nvdiffrast's ``antialias`` (Laine et al. 2020, "Modular Primitives for High-Performance Differentiable
Rendering", the antialiasing primitive), written here in vectorised torch because nvdiffrast cannot be installed on
CPU machines (and its code is not copied): after the hard rasterisation, look at every pair of horizontally or
vertically adjacent pixels p, q that see different faces. The nearer of the two (smaller depth; background is
infinitely far), o, sees face f; the segment from o's centre to the other pixel n's centre leaves f's screen
triangle through the edge e at the fraction u in [0, 1] of the way,

    u = E_e(o) / (E_e(o) - E_e(n)),    E_e(x) = cross(v_b - v_a, x - v_a)   (the edge function of e = (v_a, v_b)).

When e is a *silhouette* edge (its other face faces the other way in this view, or it has no other face), the
surface really covers [o, o + u] of the segment. When it is not, the segment goes on into the face across e, and is
followed face by face until it meets a silhouette edge (or n's own face, or ends inside a face: then there is no
silhouette between o and n). That walk is what keeps the coverage continuous on marching-tets meshes, whose slivers
cover no pixel centre yet lie between a pixel's face and the silhouette; only pairs within a pixel of a silhouette
edge's bounding box are walked. Along the pair's axis the surface then covers the fraction max(u - 1/2, 0) of n's
pixel and leaves max(1/2 - u, 0) of o's pixel uncovered:

    c_n += max(u - 1/2, 0) (c_o - c_n),      c_o += max(1/2 - u, 0) (c_n - c_o).

The blended image is continuous in the vertex positions (when the edge crosses a pixel centre the face ids change
and the two formulas meet), and d(image)/du = (c_o - c_n) gives the gradient that moves silhouettes. An edge is
resolved along one axis only -- horizontal pairs take edges closer to vertical (|d row| >= |d col|), vertical pairs
the others -- so that summed over an image the coverage changes by (edge length x normal displacement), the area a
moving edge sweeps, and is not counted twice.

Why this and not soft coverage (SoftRas-style sigmoid of the distance to every nearby face): the antialiased image
equals the hard render except on silhouette pixels (interior texture and the existing texture-fine-tuning renders are
untouched), it costs O(pixels) rather than O(faces x pixels in a blur radius), and it has no blur scale to tune; its
gradients exist only within a pixel of a silhouette, which is enough at 64x64 with several views and is what
Magic3D's refine stage used (nvdiffrast). Interior gradients come from ``rasterize.differentiable_bary``.
"""

from __future__ import annotations

import torch

from distill3d.mesh.rasterize import Fragments, clip_to_pixels
from distill3d.mesh.topology import EdgeTopology, edge_topology


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


@torch.no_grad()
def silhouette_edges(clip: torch.Tensor, faces: torch.Tensor, topology: EdgeTopology, size: int) -> torch.Tensor:
    """(B, E) bool: edges that can be silhouettes in each view -- used by one face only (or by more than two), or
    shared by a face turned towards the camera and one turned away. clip (B, V, 4), faces (F, 3)."""
    tri = clip_to_pixels(clip, size)[:, faces]  # (B, F, 3, 2)
    area = _cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0])
    front = area < 0  # counter-clockwise in NDC (y up) is negative area in pixel space (rows grow downwards)
    f0, f1 = topology.edge_faces.unbind(-1)
    return ~topology.manifold[None] | (front[:, f0] != front[:, f1.clamp_min(0)])


def antialias(
    image: torch.Tensor, frags: Fragments, clip: torch.Tensor, faces: torch.Tensor,
    topology: EdgeTopology | None = None, max_walk: int = 16,
) -> torch.Tensor:
    """Blend colours across silhouette edges (module docstring) so that the image has gradients w.r.t. the vertex
    positions at silhouettes.

    image (B, H, W, C) the hard render (e.g. shaded colour composited over the background, plus a coverage channel);
    frags the ``rasterize`` result it was made from; clip (B, V, 4) the clip coordinates given to ``rasterize`` (the
    gradient flows to them); faces (F, 3); topology ``edge_topology(faces)`` (computed when None); ``max_walk`` the
    most faces a pair's segment is followed through (``_silhouette_crossing``).
    Returns (B, H, W, C), equal to ``image`` away from silhouettes, differentiable w.r.t. ``image`` and ``clip``.
    """
    B, H, W, C = image.shape
    faces = faces.to(clip.device, torch.long)
    if faces.shape[0] == 0 or not bool(frags.mask.any()):
        return image
    topo = edge_topology(faces, clip.shape[1]) if topology is None else topology
    V = clip.shape[1]
    pix = clip_to_pixels(clip, W).reshape(B * V, 2)  # (B V, 2) with autograd; view b's vertex v at b * V + v
    with torch.no_grad():
        sil = silhouette_edges(clip.detach(), faces, topo, W)
        fid = frags.face_id.reshape(-1)
        depth = frags.depth.reshape(-1).masked_fill(fid < 0, float("inf"))  # background is infinitely far
        # Pixel pairs (p, q) whose faces differ, both axes at once (flat pixel ids b * H * W + row * W + col).
        ids = torch.arange(B * H * W, device=fid.device).reshape(B, H, W)
        fid3 = frags.face_id
        p_h = ids[:, :, :-1][fid3[:, :, :-1] != fid3[:, :, 1:]]
        p_v = ids[:, :-1, :][fid3[:, :-1, :] != fid3[:, 1:, :]]
        horizontal = torch.cat([torch.ones_like(p_h, dtype=torch.bool), torch.zeros_like(p_v, dtype=torch.bool)])
        p = torch.cat([p_h, p_v])
        q = p + torch.where(horizontal, 1, W)
        # Only pairs next to a silhouette edge can cross one: skip the (many) interior pairs before the walk.
        near = _near_silhouettes(pix.detach(), topo, sil, V, H, W)
        keep = near[p] | near[q]
        p, q, horizontal = p[keep], q[keep], horizontal[keep]
        first = depth[p] <= depth[q]
        o, n = torch.where(first, p, q), torch.where(first, q, p)  # o: the nearer pixel
        b = torch.div(o, H * W, rounding_mode="floor")
        co = torch.stack([o % W, torch.div(o, W, rounding_mode="floor") % H], -1).to(pix.dtype) + 0.5  # (col, row)
        cn = torch.stack([n % W, torch.div(n, W, rounding_mode="floor") % H], -1).to(pix.dtype) + 0.5
        f, k, ok = _silhouette_crossing(pix.detach(), faces, topo, sil, b, V, fid[o], fid[n], co, cn, max_walk)
        ia, ib = b * V + faces[f, k], b * V + faces[f, (k + 1) % 3]
        d = pix.detach()[ib] - pix.detach()[ia]
        steep = d[:, 1].abs() >= d[:, 0].abs()  # edges closer to vertical belong to horizontal pairs
        ok &= torch.where(horizontal, steep, ~steep)
        o, n, ia, ib, co, cn = (t[ok] for t in (o, n, ia, ib, co, cn))
    if o.numel() == 0:
        return image
    va, vb = pix[ia], pix[ib]
    eo, en = _cross(vb - va, co - va), _cross(vb - va, cn - va)
    u = (eo / (eo - en)).clamp(0.0, 1.0)[:, None]
    flat = image.reshape(-1, C)
    c_o, c_n = flat[o], flat[n]
    delta = torch.cat([(u - 0.5).clamp_min(0.0) * (c_o - c_n), (0.5 - u).clamp_min(0.0) * (c_n - c_o)])
    return flat.index_add(0, torch.cat([n, o]), delta.to(image.dtype)).reshape(B, H, W, C)


@torch.no_grad()
def _silhouette_crossing(
    pix: torch.Tensor, faces: torch.Tensor, topo: EdgeTopology, sil: torch.Tensor, b: torch.Tensor, n_verts: int,
    f_o: torch.Tensor, f_n: torch.Tensor, co: torch.Tensor, cn: torch.Tensor, max_walk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Follow the segment from o's centre ``co`` (N, 2) towards n's centre ``cn`` (N, 2) through the surface that o
    sees, starting in o's face ``f_o`` (N,), until it crosses a silhouette edge (views ``b`` (N,), ``sil`` (B, E);
    ``pix`` (B V, 2) screen positions, view b's vertex v at b * n_verts + v).

    Each step takes the current face's exit edge (the first edge the line leaves through, E decreasing along it);
    a non-silhouette exit edge leads into the face on its other side (same facing), which is how slivers that cover
    no pixel centre (common in marching-tets meshes) are crossed without a jump in coverage. The walk gives up
    (ok = False) when the segment ends inside the current face (n's centre is covered by it yet n sees another face:
    an occlusion the other way round), reaches n's own face across interior edges (no silhouette between them),
    meets a boundary edge of a face it did not start from, or needs more than ``max_walk`` faces.
    Returns the face (N,), the local edge k (N,) (from vertex k to k + 1) where the silhouette is crossed, ok (N,).
    """
    n = f_o.shape[0]
    f = f_o.clone()
    k = torch.zeros(n, dtype=torch.long, device=f.device)
    ok = torch.zeros(n, dtype=torch.bool, device=f.device)
    active = torch.arange(n, device=f.device)
    for _ in range(max_walk):
        if active.numel() == 0:
            break
        fa = f[active]
        v = pix[b[active, None] * n_verts + faces[fa]]  # (A, 3, 2)
        d = v.roll(-1, dims=1) - v  # edge k: vertex k -> k + 1
        sign = torch.sign(_cross(d[:, 0], -d[:, 2]))  # sign of the doubled area
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)[:, None]
        eo = _cross(d, co[active, None] - v) * sign  # edge functions, >= 0 inside
        en = _cross(d, cn[active, None] - v) * sign
        leaving = eo > en
        u = torch.where(leaving, eo / (eo - en).clamp_min(1e-30), torch.full_like(eo, float("inf")))
        u_min, ka = u.min(-1)
        crosses = u_min <= 1.0  # False: the segment ends inside this face
        e = topo.face_edges[fa, ka]
        is_sil = crosses & sil[b[active], e]
        k[active] = ka
        ok[active] = is_sil
        ef = topo.edge_faces[e]
        nxt = torch.where(ef[:, 0] == fa, ef[:, 1], ef[:, 0])
        go_on = crosses & ~is_sil & (nxt >= 0) & (nxt != f_n[active])
        f[active] = torch.where(go_on, nxt, fa)
        active = active[go_on]
    return f, k, ok


@torch.no_grad()
def _near_silhouettes(
    pix: torch.Tensor, topo: EdgeTopology, sil: torch.Tensor, n_verts: int, H: int, W: int
) -> torch.Tensor:
    """(B H W,) bool: pixels whose centre lies in a silhouette edge's screen bounding box grown by one pixel.
    A pixel pair whose centre-to-centre segment crosses a silhouette edge has both centres within one pixel of the
    crossing, so both are marked. pix (B V, 2) screen positions, sil (B, E) from ``silhouette_edges``."""
    b, e = sil.nonzero(as_tuple=True)
    out = torch.zeros(sil.shape[0] * H * W, dtype=torch.bool, device=sil.device)
    if b.numel() == 0:
        return out
    pa, pb = pix[b * n_verts + topo.edges[e, 0]], pix[b * n_verts + topo.edges[e, 1]]
    size = torch.tensor([W, H], device=pix.device)
    lo = (torch.minimum(pa, pb) - 1.5).clamp(-1.0, W + 1.0).ceil().long().clamp_min(0)  # (M, 2) (col, row)
    hi = (torch.maximum(pa, pb) + 0.5).clamp(-1.0, W + 1.0).floor().long().minimum(size - 1)
    ext = (hi - lo + 1).clamp_min(0)
    count = ext[:, 0] * ext[:, 1]
    total = int(count.sum())
    if total == 0:
        return out
    rep = torch.repeat_interleave(torch.arange(b.numel(), device=b.device), count, output_size=total)
    local = torch.arange(total, device=b.device) - (count.cumsum(0) - count)[rep]
    col = lo[rep, 0] + local % ext[rep, 0]
    row = lo[rep, 1] + torch.div(local, ext[rep, 0], rounding_mode="floor")
    out[(b[rep] * H + row) * W + col] = True
    return out
