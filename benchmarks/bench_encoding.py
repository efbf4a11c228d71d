"""CPU timings of the hash-grid encoding (distill3d.fields.encoding) and the field's MLP head: the torch code vs
the fused C++ kernels (distill3d.fields.hashgrid_cpu, distill3d.fields.mlp_head_cpu), for the default FieldConfig
(8 levels x 2 features, 2^16 table, resolutions 16..128; MLP 16 -> 32 -> 4) on random points in [-0.6, 0.6]^3, and
the same through RadianceField.query.

    python benchmarks/bench_encoding.py [--points 12000] [--threads 1 2] [--repeats 7] [--calls 10]
        [--json benchmarks/results/encoding.json]

Time is CPU time (time.process_time: robust to other load on a shared machine) per call in ms, the median over
``--repeats`` rounds of ``--calls`` calls, the variants interleaved round by round; with more than one thread, CPU
time sums the threads (it shows the threading overhead, not the speed-up), so the wall time (median, noisier) is
given too. Rows:

- encoding: ``forward`` and ``forward_with_grad`` under no_grad; fwd+bwd: ``forward`` then backward of the sum of
  the features into the table; fwd_grad+bwd: ``forward_with_grad`` then backward of features + derivatives;
- backward modes of the native kernel (0: levels split among threads, deterministic; 1: per-thread tables over
  point chunks, then summed);
- head: the MLP on the encoding's features (``jacobian.mlp_forward``) fwd+bwd, and with the spatial gradient of
  its output 0 (``jacobian.mlp_with_input_grad``, what normals need) fwd+bwd;
- field: density under no_grad; query plain fwd+bwd; query normals (create_graph) fwd+bwd (both kernels).

Not a test (no assertion on time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from mdtable import MarkdownTable, save_json

from distill3d.fields import hashgrid_cpu, mlp_head_cpu
from distill3d.fields.jacobian import mlp_forward, mlp_with_input_grad
from distill3d.fields.nerf import FieldConfig, RadianceField


def measure(variants: dict[str, callable], repeats: int, calls: int) -> dict[str, dict[str, float]]:
    """{name: fn} -> {name: {"cpu_ms", "wall_ms"}}: medians over rounds, variants interleaved in each round."""
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up (and the kernels' build, once)
        fn()
    for _ in range(repeats):
        for name, fn in variants.items():
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(calls):
                fn()
            cpu[name].append((time.process_time() - c0) / calls * 1e3)
            wall[name].append((time.perf_counter() - w0) / calls * 1e3)
    return {k: {"cpu_ms": statistics.median(cpu[k]), "wall_ms": statistics.median(wall[k])} for k in variants}


def with_path(native: bool, fn):
    """fn run with the native kernels (native=True) or the torch code forced (DISTILL3D_NATIVE=0)."""
    def run():
        old = os.environ.get("DISTILL3D_NATIVE")
        os.environ["DISTILL3D_NATIVE"] = "1" if native else "0"
        try:
            fn()
        finally:
            if old is None:
                del os.environ["DISTILL3D_NATIVE"]
            else:
                os.environ["DISTILL3D_NATIVE"] = old
    return run


def encoding_cases(field: RadianceField, x: torch.Tensor) -> dict[str, callable]:
    enc = field.encoding

    def fwd():
        with torch.no_grad():
            enc(x)

    def fwd_grad():
        with torch.no_grad():
            enc.forward_with_grad(x)

    def fwd_bwd():
        enc.table.grad = None
        enc(x).sum().backward()

    def fwd_grad_bwd():
        enc.table.grad = None
        f, j = enc.forward_with_grad(x)
        (f.sum() + j.sum()).backward()

    return {"forward": fwd, "forward_with_grad": fwd_grad, "fwd+bwd": fwd_bwd, "fwd_grad+bwd": fwd_grad_bwd}


def head_cases(field: RadianceField, x: torch.Tensor) -> dict[str, callable]:
    with torch.no_grad():
        feats, jac = field.encoding.forward_with_jacobian(x)
    feats = feats.requires_grad_(True)

    def plain():
        field.zero_grad(set_to_none=True)
        mlp_forward(field.mlp, feats).sum().backward()

    def with_grad():
        field.zero_grad(set_to_none=True)
        h, g = mlp_with_input_grad(field.mlp, feats, jac)
        (h.sum() + g.sum()).backward()

    return {"mlp fwd+bwd": plain, "mlp + input grad fwd+bwd": with_grad}


def field_cases(field: RadianceField, x: torch.Tensor) -> dict[str, callable]:
    def density():
        with torch.no_grad():
            field.density(x)

    def plain():
        field.zero_grad(set_to_none=True)
        o = field.query(x)
        (o.sigma.sum() + o.albedo.sum()).backward()

    def normals():
        field.zero_grad(set_to_none=True)
        o = field.query(x, normals=True, create_graph=True)
        (o.sigma.sum() + o.albedo.sum() + o.normals.sum()).backward()

    return {"density no grad": density, "query plain fwd+bwd": plain, "query normals fwd+bwd": normals}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=12000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    t0 = time.perf_counter()
    if not (hashgrid_cpu.available() and mlp_head_cpu.available()):
        raise SystemExit("native kernels unavailable (see the warning above); nothing to compare")
    build_s = time.perf_counter() - t0
    torch.manual_seed(0)
    field = RadianceField(FieldConfig(blob_density=5.0))
    with torch.no_grad():
        field.encoding.table.normal_(0.0, 0.05)
    x = (torch.rand(args.points, 3) * 2 - 1) * 0.6
    results: dict = {"points": args.points, "encoding": FieldConfig().encoding.to_dict(),
                     "machine_cores": os.cpu_count(),
                     "timing": f"median of {args.repeats} rounds x {args.calls} calls, interleaved; ms per call",
                     "kernel_load_s": build_s, "rows": []}
    print(f"{args.points} points, default FieldConfig encoding; kernels loaded in {build_s:.2f} s")
    table = MarkdownTable(("case" + " " * 20, ""), ("threads", ""), ("torch cpu ms", ".2f"), ("native cpu ms", ".2f"),
                          ("speed-up", ".1f"), ("torch wall ms", ".2f"), ("native wall ms", ".2f"))
    for threads in args.threads:
        torch.set_num_threads(threads)
        for group, cases in (("encoding", encoding_cases(field, x)), ("head", head_cases(field, x)),
                             ("field", field_cases(field, x))):
            variants = {}
            for name, fn in cases.items():
                variants[(name, "torch")] = with_path(False, fn)
                variants[(name, "native")] = with_path(True, fn)
            m = measure(variants, args.repeats, args.calls)
            for name in cases:
                t, n = m[(name, "torch")], m[(name, "native")]
                row = {"group": group, "case": name, "threads": threads, "torch_cpu_ms": t["cpu_ms"],
                       "native_cpu_ms": n["cpu_ms"], "torch_wall_ms": t["wall_ms"], "native_wall_ms": n["wall_ms"]}
                results["rows"].append(row)
                table.row(name, threads, t["cpu_ms"], n["cpu_ms"], t["cpu_ms"] / n["cpu_ms"], t["wall_ms"],
                          n["wall_ms"])
    # backward modes of the kernel alone
    enc = field.encoding
    x01, _, _ = enc._normalise(x)
    x01 = x01.contiguous()
    meta = enc._grid_meta()
    d = enc.output_dim
    g_out, g_der = torch.randn(args.points, d), torch.randn(args.points, 3, d)
    shape = tuple(enc.table.shape)
    print(f"\nnative backward (features + derivatives), {args.points} points")
    table = MarkdownTable(("mode" + " " * 30, ""), ("threads", ""), (" cpu ms", ".2f"), (" wall ms", ".2f"))
    results["backward_modes"] = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        modes = {0: "0: levels split (deterministic)", 1: "1: per-thread tables + sum"}
        m = measure({k: (lambda k=k: hashgrid_cpu.backward(x01, shape, torch.float32, meta, g_out, g_der, k))
                     for k in modes}, args.repeats, args.calls)
        for k, label in modes.items():
            results["backward_modes"].append({"mode": k, "threads": threads, **m[k]})
            table.row(label, threads, m[k]["cpu_ms"], m[k]["wall_ms"])
    save_json(args.json, results)


if __name__ == "__main__":
    main()
