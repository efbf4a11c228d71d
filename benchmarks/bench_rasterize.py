"""Timings of the torch rasteriser (distill3d.mesh.rasterize), of differentiable mesh rendering with silhouette
gradients (mesh.surface.render_surface: rasterise + differentiable barycentrics + shading + antialias), and of a
DMTet scene's render + backward (marching tets + the same renderer + regularisers), on the CPU (and CUDA if present).

    OMP_NUM_THREADS=1 python benchmarks/bench_rasterize.py [--faces 20000] [--aa-faces 5000] [--dmtet 32 48 64]
        [--views 4] [--repeats 3] [--sizes 64 256] [--json benchmarks/results/rasterize.json]

Prints three tables (and writes them as JSON with --json): ms per frame of ``rasterize`` alone and with
differentiable barycentrics + backward; ms per call of render + backward with antialiasing for an ~``--aa-faces``
mesh at 64x64, 1 and ``--views`` views; ms per call of a DMTet render + backward at 64x64 for grids of
``--dmtet`` cells per side (sphere SDF, a RadianceField colour network, Lambertian shading). Not a test.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from mdtable import MarkdownTable, save_json


def icosphere_with_faces(n_faces: int):
    """An icosphere subdivided until it has >= n_faces faces (20 * 4^k)."""
    import trimesh

    k = 0
    while 20 * 4**k < n_faces:
        k += 1
    s = trimesh.creation.icosphere(k, 0.6)
    return torch.as_tensor(s.vertices, dtype=torch.float32), torch.as_tensor(s.faces, dtype=torch.int64)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def best_ms(fn, repeats: int, device: str) -> float:
    """Best of ``repeats`` timed calls after one warm-up, in ms (the CPU is shared: the minimum is the cost)."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def bench(
    size: int, verts: torch.Tensor, faces: torch.Tensor, views: int, repeats: int, device: str
) -> tuple[float, float]:
    from distill3d.cameras import ring_cameras, world_to_clip
    from distill3d.mesh.rasterize import differentiable_bary, interpolate, rasterize

    cams = ring_cameras(views, device=device)
    v, f = verts.to(device), faces.to(device)
    clip = world_to_clip(v, cams)

    def full() -> None:
        vg = v.clone().requires_grad_(True)
        c = world_to_clip(vg, cams)
        frags = rasterize(c, f, size)
        interpolate(vg, frags, f, bary=differentiable_bary(c, f, frags)).sum().backward()

    return best_ms(lambda: rasterize(clip, f, size), repeats, device) / views, best_ms(full, repeats, device) / views


def bench_silhouette(verts: torch.Tensor, faces: torch.Tensor, views: int, repeats: int, device: str) -> float:
    """ms per render + backward (all views together) of render_surface at 64x64 with antialiasing."""
    from distill3d.cameras import ring_cameras
    from distill3d.mesh.surface import render_surface

    cams = ring_cameras(views, device=device)
    v, f = verts.to(device), faces.to(device)

    def albedo(x: torch.Tensor) -> torch.Tensor:  # a cheap colour field: position as colour
        return (x * 0.5 + 0.5).clamp(0, 1)

    def step() -> None:
        vg = v.clone().requires_grad_(True)
        out = render_surface(vg, f, cams, 64, albedo_fn=albedo, shading="lambertian", background=1.0)
        (out["rgb"].mean() + out["opacity"].mean()).backward()

    return best_ms(step, repeats, device)


def bench_dmtet(resolution: int, views: int, repeats: int, device: str) -> tuple[float, int]:
    """(ms per DMTet render + backward + regularisers at 64x64, number of faces)."""
    from distill3d.cameras import ring_cameras
    from distill3d.fields.nerf import RadianceField
    from distill3d.mesh.dmtet import DMTetScene
    from distill3d.mesh.dmtet_init import box_grid

    grid = box_grid(torch.full((3,), -0.6), torch.full((3,), 0.6), resolution, 0.1)
    scene = DMTetScene(grid, grid.vertices.norm(dim=-1) - 0.6, RadianceField()).to(device)
    cams = ring_cameras(views, device=device)
    bg = torch.ones(views, 3, device=device)
    n_faces = []

    def step() -> None:
        scene.zero_grad(set_to_none=True)
        out = scene.render(cams, 64, shading="lambertian", background=bg)
        n_faces.append(out["mesh_faces"].shape[0])
        (out["rgb"].mean() + sum(scene.losses(out).values())).backward()

    return best_ms(step, repeats, device), n_faces[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--aa-faces", type=int, default=5000)
    ap.add_argument("--dmtet", type=int, nargs="*", default=[32, 48, 64])
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results: dict = {"machine": f"{os.cpu_count()} cores", "torch_threads": torch.get_num_threads(),
                     "timing": f"best of {args.repeats} calls after a warm-up, ms", "rasterize": [], "silhouette": [],
                     "dmtet": []}

    verts, faces = icosphere_with_faces(args.faces)
    print(f"mesh: {faces.shape[0]} faces, {verts.shape[0]} vertices; {args.views} views per batch; "
          f"torch threads {torch.get_num_threads()}")
    table = MarkdownTable(("   size", ""), ("device", ""), ("rasterize ms/frame", ".1f"),
                          ("+ diff. bary + backward ms/frame", ".1f"))
    for device in devices:
        for size in args.sizes:
            plain, full = bench(size, verts, faces, args.views, args.repeats, device)
            results["rasterize"].append({"size": size, "device": device, "faces": faces.shape[0],
                                         "rasterize_ms_per_frame": plain, "with_backward_ms_per_frame": full})
            table.row(f"{size}x{size}", device, plain, full)

    verts, faces = icosphere_with_faces(args.aa_faces)
    print(f"\nrender_surface (rasterise + diff. bary + Lambertian + antialias) + backward, 64x64, "
          f"{faces.shape[0]} faces")
    table = MarkdownTable(("device", ""), ("views", ""), ("ms per call", ".1f"))
    for device in devices:
        for views in sorted({1, args.views}):
            ms = bench_silhouette(verts, faces, views, args.repeats, device)
            results["silhouette"].append({"device": device, "views": views, "faces": faces.shape[0], "ms": ms})
            table.row(device, views, ms)

    if args.dmtet:
        print("\nDMTet scene render + backward + regularisers, 64x64, sphere, RadianceField colours")
        table = MarkdownTable(("    grid", ""), ("device", ""), ("views", ""), (" faces", ""), ("ms per call", ".1f"))
        for device in devices:
            for res in args.dmtet:
                for views in sorted({1, args.views}):
                    ms, n = bench_dmtet(res, views, args.repeats, device)
                    results["dmtet"].append({"grid": res, "device": device, "views": views, "faces": n, "ms": ms})
                    table.row(f"{res}^3", device, views, n, ms)
    save_json(args.json, results)


if __name__ == "__main__":
    main()
