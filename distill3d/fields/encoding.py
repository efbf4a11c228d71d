"""Multi-resolution hash-grid encoding (Instant-NGP, Mueller et al. 2022) in pure torch.

Written by hand because no installed library provides it on CPU: tiny-cuda-nn and nerfacc's grids are CUDA only.
Ideas follow the paper (Sec. 3): level l has ``N_l = floor(N_min * b^l)`` cells per axis with
``b = exp((ln N_max - ln N_min) / (L - 1))``; a level whose ``(N_l + 1)^3`` vertices fit in the table of
``T = 2^log2_hashmap_size`` entries is indexed directly (one-to-one), the others through the spatial hash (eq. 4)

    h(x) = (x_1 * pi_1  XOR  x_2 * pi_2  XOR  x_3 * pi_3)  mod T,   pi = (1, 2654435761, 805459861),

then the 8 corner feature vectors are trilinearly interpolated. Tables start at U(-1e-4, 1e-4) (paper Sec. 4).

Speed on CPU: all levels of one kind (direct / hashed) are computed in a single vectorised pass; the 8 corner
indices are built as outer "sums" of per-axis terms (broadcasting), the interpolation is three lerps, and every
intermediate keeps the point axis last (contiguous), with the table stored feature-major (F, M): small trailing
dimensions (8 corners, 2 features) made torch's CPU kernels several times slower. ``forward_with_grad`` gives the
features' spatial derivatives from the same gathered corners, so normals need no double backward (the costliest
part of a distillation step here). Only plain differentiable ops are used: autograd through ``forward`` also works.

On CPU, ``forward`` and ``forward_with_grad`` run fused C++ kernels instead (``hashgrid_cpu``: indices, gathers,
interpolation and derivatives per point in registers, a scatter-add backward into the table; several times faster)
when they are built and the points do not require grad (the kernels give gradients w.r.t. the table only, which is
all this project needs: sample positions are data). The torch code below stays the reference, the CUDA path and the
fallback (``DISTILL3D_NATIVE=0`` forces it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from distill3d.fields import hashgrid_cpu, points_cpu
from distill3d.fields.jacobian import SpatialJacobian

_PRIMES = (1, 2654435761, 805459861)


@dataclass
class HashGridConfig:
    """Encoding hyper-parameters. ``kind="dense"`` makes every level a plain dense grid (no hashing, no table cap)."""

    n_levels: int = 12
    features_per_level: int = 2
    log2_hashmap_size: int = 16
    base_resolution: int = 16
    max_resolution: int = 256
    bound: float = 1.0  # the grid covers [-bound, bound]^3
    init_scale: float = 1e-4
    kind: str = "hash"  # "hash" | "dense"

    def to_dict(self) -> dict:
        return asdict(self)


class HashGridEncoding(nn.Module):
    """x (N, 3) in world units -> features (N, n_levels * features_per_level).

    Points are normalised with ``bound`` to [0, 1]^3 and clamped (callers zero the density outside the box).
    """

    def __init__(self, cfg: HashGridConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.kind not in ("hash", "dense"):
            raise ValueError(f"unknown encoding kind {cfg.kind!r}")
        L, T = cfg.n_levels, 2 ** cfg.log2_hashmap_size
        b = math.exp((math.log(cfg.max_resolution) - math.log(cfg.base_resolution)) / max(L - 1, 1))
        res = [int(math.floor(cfg.base_resolution * b**l + 1e-6)) for l in range(L)]
        sizes, dense = [], []
        for r in res:
            n_vert = (r + 1) ** 3
            is_dense = cfg.kind == "dense" or n_vert <= T
            dense.append(is_dense)
            sizes.append(n_vert if is_dense else T)
        if cfg.kind == "hash" and any(dense[i] and not dense[i - 1] for i in range(1, L)):
            raise ValueError("resolutions must increase with level")
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        self.resolutions = res
        self.n_dense = sum(dense)  # dense levels come first (resolutions increase)
        self.table_size = T
        self.output_dim = L * cfg.features_per_level
        # (F, M): feature-major so the gather along M yields point-contiguous rows.
        self.table = nn.Parameter(torch.empty(cfg.features_per_level, offsets[-1]).uniform_(-cfg.init_scale, cfg.init_scale))
        self.register_buffer("_res", torch.tensor(res, dtype=torch.float32), persistent=False)
        self.register_buffer("_offsets", torch.tensor(offsets[:-1], dtype=torch.int64), persistent=False)
        strides = torch.tensor([[1, r + 1, (r + 1) ** 2] for r in res], dtype=torch.int64)
        self.register_buffer("_strides", strides, persistent=False)
        self.register_buffer("_primes", torch.tensor(_PRIMES, dtype=torch.int64), persistent=False)

    def _corners(self, x01: torch.Tensor, lo: int, hi: int, hashed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Corner features and fractional positions of levels [lo, hi): x01 (3, N) -> f (F, l, 2, 2, 2, N) (the 8
        corners, axes x, y, z), frac (l, 3, N) (differentiable w.r.t. x)."""
        n, nl = x01.shape[1], hi - lo
        res = self._res[lo:hi, None, None]  # (l, 1, 1)
        pos = x01[None] * res  # (l, 3, N) in vertex units
        i0 = pos.detach().floor().clamp(min=0).minimum(res - 1)
        frac = pos - i0  # (l, 3, N); carries the gradient w.r.t. x
        corner = torch.stack([i0, i0 + 1], dim=2).long()  # (l, 3, 2, N)
        if hashed:  # spatial hash, Instant-NGP eq. 4; T is a power of two so "mod T" is a bit mask
            ax, ay, az = (corner * self._primes[None, :, None, None]).unbind(1)  # each (l, 2, N)
            idx = (ax[:, :, None, None] ^ ay[:, None, :, None] ^ az[:, None, None, :]) & (self.table_size - 1)
        else:  # direct indexing of the (N_l + 1)^3 vertices
            ax, ay, az = (corner * self._strides[lo:hi, :, None, None]).unbind(1)
            idx = ax[:, :, None, None] + ay[:, None, :, None] + az[:, None, None, :]
        idx = idx.reshape(nl, 8, n) + self._offsets[lo:hi, None, None]  # (l, 8, N)
        f = self.table.index_select(1, idx.reshape(-1)).view(self.table.shape[0], nl, 2, 2, 2, n)
        return f, frac

    def _levels(self, x01: torch.Tensor, lo: int, hi: int, hashed: bool, with_grad: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Interpolated features of levels [lo, hi): x01 (3, N) -> (F, hi - lo, N), and with ``with_grad`` their
        derivatives w.r.t. x01's coordinates (3, F, hi - lo, N).

        Trilinear interpolation as three lerps (x, then y, then z): fewer full-size passes over memory than the 8
        weighted corners, which is what costs on CPU. The derivative of each lerp chain is the lerp of the
        differences along that axis times the level's resolution (the chain rule through pos = x01 * res)."""
        f, frac = self._corners(x01, lo, hi, hashed)
        fx, fy, fz = (t[None] for t in frac.unbind(1))  # (1, l, N)
        cx = torch.lerp(f[:, :, 0], f[:, :, 1], fx[:, :, None, None])  # (F, l, 2, 2, N)
        cxy = torch.lerp(cx[:, :, 0], cx[:, :, 1], fy[:, :, None])  # (F, l, 2, N)
        value = torch.lerp(cxy[:, :, 0], cxy[:, :, 1], fz)  # (F, l, N)
        if not with_grad:
            return value, None
        dx = f[:, :, 1] - f[:, :, 0]  # (F, l, 2, 2, N)
        dx = torch.lerp(dx[:, :, 0], dx[:, :, 1], fy[:, :, None])
        dx = torch.lerp(dx[:, :, 0], dx[:, :, 1], fz)
        dy = cx[:, :, 1] - cx[:, :, 0]  # (F, l, 2, N)
        dy = torch.lerp(dy[:, :, 0], dy[:, :, 1], fz)
        dz = cxy[:, :, 1] - cxy[:, :, 0]
        return value, torch.stack([dx, dy, dz]) * self._res[lo:hi, None]  # (3, F, l, N)

    def _normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """x (N, 3) world -> x01 (N, 3) clamped to [0, 1], inside (N,) bool (before clamping), d x01 / d x."""
        scale = 1.0 / (2 * self.cfg.bound)
        x01 = (x + self.cfg.bound) * scale
        inside = ((x01 >= 0) & (x01 <= 1)).all(-1)
        return x01.clamp(0.0, 1.0), inside, scale

    def _all_levels(self, x: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        x01, inside, scale = self._normalise(x)
        x01 = x01.T  # (3, N)
        L = self.cfg.n_levels
        parts = []
        if self.n_dense > 0:
            parts.append(self._levels(x01, 0, self.n_dense, False, with_grad))
        if self.n_dense < L:
            parts.append(self._levels(x01, self.n_dense, L, True, with_grad))
        value = torch.cat([p[0] for p in parts], dim=1) if len(parts) > 1 else parts[0][0]  # (F, L, N)
        grad = None
        if with_grad:
            grad = torch.cat([p[1] for p in parts], dim=2) if len(parts) > 1 else parts[0][1]  # (3, F, L, N)
            grad = grad * scale
        return value, grad, inside

    def _use_native(self, x: torch.Tensor) -> bool:
        """The fused CPU kernels apply: CPU tensors of one float dtype, x without gradient, kernels built and not
        disabled (``DISTILL3D_NATIVE=0``)."""
        t = self.table
        return (x.device.type == "cpu" and t.device.type == "cpu" and x.dtype == t.dtype
                and t.dtype in (torch.float32, torch.float64) and x.dim() == 2 and x.shape[-1] == 3
                and not (x.requires_grad and torch.is_grad_enabled()) and self.table_size <= 2**32
                and hashgrid_cpu.available())

    def _grid_meta(self) -> hashgrid_cpu.GridMeta:
        """The kernels' indexing inputs (cached per table dtype)."""
        cache = self.__dict__.setdefault("_meta_cache", {})
        dtype = self.table.dtype
        if dtype not in cache:
            cache[dtype] = hashgrid_cpu.GridMeta(self._res.detach().to("cpu", dtype), self._offsets.cpu(),
                                                 self._strides.cpu(), self.n_dense, self.table_size - 1)
        return cache[dtype]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3) -> (N, n_levels * features_per_level), level-major (level 0's F features first)."""
        if self._use_native(x):
            x01, _ = self._unit_cube(x, with_factor=False)
            return hashgrid_cpu.HashGridFunction.apply(self.table, x01, self._grid_meta(), False)
        value, _, _ = self._all_levels(x, with_grad=False)
        return value.permute(2, 1, 0).reshape(x.shape[0], self.output_dim)

    def forward_with_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 3) -> features (N, D) and their spatial derivatives d features / d x (N, 3, D) (world units; 0
        outside the box, where the features are clamped).

        Computed with the features in one pass over the gathered corners, without autograd: normals and the
        eikonal term then need only first-order autograd through the table (no double backward, which dominated
        the distillation step on CPU)."""
        feats, jac = self.forward_with_jacobian(x)
        return feats, jac.dense()

    def native_jacobian_inputs(self, x: torch.Tensor
                               ) -> tuple[torch.Tensor, hashgrid_cpu.GridMeta, torch.Tensor] | None:
        """Where the native kernels apply to x (N, 3): what they read for the features and derivatives, x01 (N, 3)
        contiguous in [0, 1], the grid's ``GridMeta``, and the derivatives' per-point world factor (N,) (0 outside
        the box); else None."""
        if not self._use_native(x):
            return None
        x01, factor = self._unit_cube(x, with_factor=True)
        return x01, self._grid_meta(), factor

    def _unit_cube(self, x: torch.Tensor, with_factor: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``_normalise`` for the native kernels: x01 (N, 3) contiguous and, with ``with_factor``, the derivatives'
        world factor (N,) (1 / 2b inside the box, else 0); one native pass (``points_cpu``) where it applies."""
        if points_cpu.applies(x):
            return points_cpu.unit_cube(x, self.cfg.bound, with_factor)
        x01, inside, scale = self._normalise(x.detach())
        return x01.contiguous(), inside.to(x01.dtype) * scale if with_factor else None

    def forward_with_jacobian(self, x: torch.Tensor) -> tuple[torch.Tensor, SpatialJacobian]:
        """``forward_with_grad`` with the derivatives as a ``SpatialJacobian`` (the unit-cube derivatives and the
        per-point world-unit factor apart: the fields contract them before scaling)."""
        native = self.native_jacobian_inputs(x)
        if native is not None:
            x01, meta, scale = native
            feats, d01 = hashgrid_cpu.HashGridFunction.apply(self.table, x01, meta, True)
            return feats, SpatialJacobian(d01, scale)
        value, grad, inside = self._all_levels(x, with_grad=True)
        n = x.shape[0]
        feats = value.permute(2, 1, 0).reshape(n, self.output_dim)
        jac = grad.permute(3, 0, 2, 1).reshape(n, 3, self.output_dim)
        return feats, SpatialJacobian(jac, inside.to(grad.dtype))
