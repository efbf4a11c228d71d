"""Multi-resolution hash-grid encoding (Instant-NGP, Mueller et al. 2022) in pure torch.

Written by hand because no installed library provides it on CPU: tiny-cuda-nn and nerfacc's grids are CUDA only.
Ideas follow the paper (Sec. 3): level l has ``N_l = floor(N_min * b^l)`` cells per axis with
``b = exp((ln N_max - ln N_min) / (L - 1))``; a level whose ``(N_l + 1)^3`` vertices fit in the table of
``T = 2^log2_hashmap_size`` entries is indexed directly (one-to-one), the others through the spatial hash (eq. 4)

    h(x) = (x_1 * pi_1  XOR  x_2 * pi_2  XOR  x_3 * pi_3)  mod T,   pi = (1, 2654435761, 805459861),

then the 8 corner feature vectors are trilinearly interpolated. Tables start at U(-1e-4, 1e-4) (paper Sec. 4).

Speed on CPU: all levels of one kind (direct / hashed) are computed in a single vectorised pass; the 8 corner
indices and weights are built as outer "sums" of per-axis terms (broadcasting) instead of an (N, L, 8, 3) tensor,
and every intermediate keeps the point axis last (contiguous), with the table stored feature-major (F, M): small
trailing dimensions (8 corners, 2 features) made torch's CPU kernels several times slower, most of all in the double
backward of autograd normals. Only plain differentiable ops are used, so ``torch.autograd.grad(...,
create_graph=True)`` through the encoding works (normals for shading and the orientation loss).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

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

    def _levels(self, x01: torch.Tensor, lo: int, hi: int, hashed: bool) -> torch.Tensor:
        """Interpolated features of levels [lo, hi): x01 (3, N) -> (F, hi - lo, N)."""
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
        wx, wy, wz = torch.stack([1.0 - frac, frac], dim=2).unbind(1)  # each (l, 2, N)
        w = (wx[:, :, None, None] * wy[:, None, :, None] * wz[:, None, None, :]).reshape(nl, 8, n)
        feats = self.table.index_select(1, idx.reshape(-1)).view(self.table.shape[0], nl, 8, n)  # (F, l, 8, N)
        return (feats * w[None]).sum(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3) -> (N, n_levels * features_per_level), level-major (level 0's F features first)."""
        x01 = ((x + self.cfg.bound) / (2 * self.cfg.bound)).clamp(0.0, 1.0).T  # (3, N)
        L = self.cfg.n_levels
        parts = []
        if self.n_dense > 0:
            parts.append(self._levels(x01, 0, self.n_dense, hashed=False))
        if self.n_dense < L:
            parts.append(self._levels(x01, self.n_dense, L, hashed=True))
        out = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (F, L, N)
        return out.permute(2, 1, 0).reshape(x.shape[0], self.output_dim)
