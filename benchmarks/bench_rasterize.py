"""Time per frame of the torch rasteriser (distill3d.mesh.rasterize) for a ~20k-face mesh at 64x64 and 256x256.

    OMP_NUM_THREADS=1 python benchmarks/bench_rasterize.py [--faces 20000] [--views 4] [--repeats 3]

Prints a table: size, device, ms per frame for rasterize alone, and for rasterize + differentiable barycentrics +
interpolation + backward to vertex positions (what Magic3D's DMTet stage will need). Not a test.
"""

from __future__ import annotations

import argparse
import time

import torch


def icosphere_with_faces(n_faces: int):
    """An icosphere subdivided until it has >= n_faces faces (20 * 4^k)."""
    import trimesh

    k = 0
    while 20 * 4**k < n_faces:
        k += 1
    s = trimesh.creation.icosphere(k, 0.6)
    return torch.as_tensor(s.vertices, dtype=torch.float32), torch.as_tensor(s.faces, dtype=torch.int64)


def bench(size: int, verts: torch.Tensor, faces: torch.Tensor, views: int, repeats: int, device: str) -> tuple[float, float]:
    from distill3d.cameras import ring_cameras, world_to_clip
    from distill3d.mesh.rasterize import differentiable_bary, interpolate, rasterize

    cams = ring_cameras(views, device=device)
    v = verts.to(device)
    f = faces.to(device)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    clip = world_to_clip(v, cams)
    rasterize(clip, f, size)  # warm-up
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        rasterize(clip, f, size)
    sync()
    plain = (time.perf_counter() - t0) / (repeats * views)
    t0 = time.perf_counter()
    for _ in range(repeats):
        vg = v.clone().requires_grad_(True)
        clip = world_to_clip(vg, cams)
        frags = rasterize(clip, f, size)
        out = interpolate(vg, frags, f, bary=differentiable_bary(clip, f, frags))
        out.sum().backward()
    sync()
    full = (time.perf_counter() - t0) / (repeats * views)
    return plain * 1e3, full * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    args = ap.parse_args()
    verts, faces = icosphere_with_faces(args.faces)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"mesh: {faces.shape[0]} faces, {verts.shape[0]} vertices; {args.views} views per batch; "
          f"torch threads {torch.get_num_threads()}")
    print(f"| {'size':>7} | {'device':>6} | {'rasterize ms/frame':>18} | {'+ diff. bary + backward ms/frame':>32} |")
    print(f"|{'-' * 9}|{'-' * 8}|{'-' * 20}|{'-' * 34}|")
    for device in devices:
        for size in args.sizes:
            plain, full = bench(size, verts, faces, args.views, args.repeats, device)
            print(f"| {f'{size}x{size}':>7} | {device:>6} | {plain:>18.1f} | {full:>32.1f} |")


if __name__ == "__main__":
    main()
