"""Fused CPU kernels for the multi-resolution hash-grid encoding (``encoding.HashGridEncoding``), in C++.

Why native code here: on CPU the hash grid is most of a score-distillation step, and in torch every
step of it (corner indices, 8 corners x levels x features gathers, lerps, their derivatives and the backward's
scatter-add) is a memory-bound pass over a (F, L, 8, N) temporary. No installed library provides a CPU hash grid
(tiny-cuda-nn's and nerfacc's grids are CUDA only), so this module fuses it: per point and level, the 8 corner
indices, the gathers, the trilinear interpolation and (optionally) the 3 spatial derivatives stay in registers; the
backward recomputes the indices and scatter-adds into the table.

How it is built and loaded: ``native_build.NativeLibrary`` (the C++ source is the string ``_SOURCE`` below; one
warning and the torch code where no compiler is; ``DISTILL3D_NATIVE=0`` forces the torch code).

Vectorised: with 2 features per level on a contiguous table (every field config here) each level's per-point work
(cell, corner indices, the gathers, lerps and derivatives; the backward's coefficients) runs on 8 points at once
(``omp simd``; the compiler's gathers), bit for bit the scalar code's arithmetic. A red cube's view at step 600
(39.6k samples): forward with derivatives 3.4 -> 2.1 ms, backward 4.2 -> 2.4 ms; without the vector loops the
backward also read its (N, 3, D) gradient once per level, now once per chunk of points.

Threads: torch's intra-op count (see native_build). The forward splits the points among threads; the backward
gives each thread its own levels (each level owns its own slice of the table, so no two threads write the same
entry, and the sums are taken in point order whatever the thread count: the table gradient is deterministic, bit
for bit). The alternative (per-thread gradient tables over point chunks, then a reduction), ``mode=1``, is kept
for the benchmark.

Gradients: only w.r.t. the table. The sample positions never carry gradients in this project (cameras and ray
samples are data, not parameters), so no gradient w.r.t. x is computed; the encoding takes its torch code when x
requires grad. The backward is once-differentiable (the fields never need a double backward through the encoding:
normals come from ``forward_with_grad``).
"""

from __future__ import annotations

import ctypes

import torch

from distill3d.native_build import NativeLibrary, ptr

_SOURCE = r"""
// distill3d hash-grid encoding, fused CPU kernels (see distill3d/fields/hashgrid_cpu.py). No torch headers:
// plain arrays in, plain arrays out; the Python side checks shapes, dtypes and contiguity.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>
#include <omp.h>

namespace {

struct Grid {
  int64_t n;            // points
  int64_t m;            // table entries (columns of the (F, M) table)
  int64_t s_f, s_m;     // table strides (elements) along F and M
  int f;                // features per level
  int l;                // levels
  int n_dense;          // levels [0, n_dense) are indexed directly, the others hashed
  uint32_t hash_mask;   // T - 1
  const int64_t* offsets;  // (L,) first table entry of each level
  const int64_t* strides;  // (L, 3) direct-indexing strides 1, r + 1, (r + 1)^2
};

// a + w (b - a), branch free (torch.lerp switches formulas at w = 0.5: a data-dependent branch here, mispredicted
// half the time; the results differ by rounding only).
template <typename T>
inline T lerp(T a, T b, T w) {
  return a + w * (b - a);
}

// Cell of a point at one level: corner table indices (order x-major: c = 4 a + 2 b + c for corner (a, b, c)) and
// the fractional position in the cell; the torch code's arithmetic (pos = x * r, i0 = clamp(floor(pos), 0, r - 1),
// frac = pos - i0), where floor is a truncation of the clamped pos >= 0 (no SSE4.1 round instruction at the
// baseline ISA: std::floor would be a call). A NaN coordinate gives cell 0 and NaN weights, never an index outside
// the level.
template <typename T>
inline void cell(const Grid& g, int lvl, T r, int64_t r_max, const T* x, int64_t idx[8], T w[3]) {
  int64_t i[3];
  const T r_max_t = static_cast<T>(r_max);
  for (int k = 0; k < 3; ++k) {
    const T pos = x[k] * r;
    T pc = pos > T(0) ? pos : T(0);  // NaN -> 0
    pc = pc < r_max_t ? pc : r_max_t;  // clamped before the conversion: any x gives an index inside the level
    const int64_t ik = static_cast<int64_t>(pc);
    i[k] = ik;
    w[k] = pos - static_cast<T>(ik);
  }
  const int64_t off = g.offsets[lvl];
  if (lvl < g.n_dense) {
    const int64_t* s = g.strides + 3 * lvl;
    const int64_t ax[2] = {i[0] * s[0], (i[0] + 1) * s[0]};
    const int64_t ay[2] = {i[1] * s[1], (i[1] + 1) * s[1]};
    const int64_t az[2] = {i[2] * s[2], (i[2] + 1) * s[2]};
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b)
        for (int c = 0; c < 2; ++c) idx[4 * a + 2 * b + c] = off + ax[a] + ay[b] + az[c];
  } else {
    // Instant-NGP eq. 4: the low 32 bits of the int64 products are the uint32 products; T <= 2^32.
    const uint32_t ax[2] = {uint32_t(i[0]), uint32_t(i[0] + 1)};
    const uint32_t ay[2] = {uint32_t(i[1]) * 2654435761u, uint32_t(i[1] + 1) * 2654435761u};
    const uint32_t az[2] = {uint32_t(i[2]) * 805459861u, uint32_t(i[2] + 1) * 805459861u};
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b)
        for (int c = 0; c < 2; ++c)
          idx[4 * a + 2 * b + c] = off + int64_t((ax[a] ^ ay[b] ^ az[c]) & g.hash_mask);
  }
}

// The forward's point chunks, level-outer inside a chunk (one level's table slice stays in cache while the chunk's
// points gather from it): a multiple of the thread count, of at most ~4096 points (larger chunks measured no faster).
inline void forward_chunks(int64_t n, int64_t& n_chunks, int64_t& chunk) {
  const int64_t nt = omp_get_max_threads();
  const int64_t per_thread = std::max<int64_t>(1, (n + nt * 4096 - 1) / (nt * 4096));
  n_chunks = std::max<int64_t>(1, std::min<int64_t>(nt * per_thread, (n + 63) / 64));
  chunk = (n + n_chunks - 1) / n_chunks;
}

// out (N, L*F) level-major; dout (N, 3, L*F) or null: derivatives w.r.t. x (in [0, 1] units).
template <typename T>
void forward_impl(const Grid& g, const T* x, const T* table, const T* res, T* out, T* dout) {
  const int F = g.f;
  const int64_t D = int64_t(g.l) * F;
  int64_t n_chunks, chunk;
  forward_chunks(g.n, n_chunks, chunk);
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    const int64_t n0 = std::min(g.n, ch * chunk), n1 = std::min(g.n, n0 + chunk);
    for (int lvl = 0; lvl < g.l; ++lvl) {  // level-outer inside a chunk: one table slice stays hot
      const T r = res[lvl];
      const int64_t r_max = static_cast<int64_t>(r) - 1;
      for (int64_t n = n0; n < n1; ++n) {
        int64_t idx[8];
        T w[3];
        cell<T>(g, lvl, r, r_max, x + 3 * n, idx, w);
        for (int f = 0; f < F; ++f) {
          const T* tf = table + f * g.s_f;
          T v[8];
          for (int c = 0; c < 8; ++c) v[c] = tf[idx[c] * g.s_m];
          // lerp along x (corners (0, b, c) -> (1, b, c)), then y, then z, as the torch code does
          T cx[4];
          for (int bc = 0; bc < 4; ++bc) cx[bc] = lerp(v[bc], v[4 + bc], w[0]);
          const T cxy0 = lerp(cx[0], cx[2], w[1]), cxy1 = lerp(cx[1], cx[3], w[1]);
          out[n * D + lvl * F + f] = lerp(cxy0, cxy1, w[2]);
          if (dout) {
            T dx[4];
            for (int bc = 0; bc < 4; ++bc) dx[bc] = v[4 + bc] - v[bc];
            const T dx0 = lerp(dx[0], dx[2], w[1]), dx1 = lerp(dx[1], dx[3], w[1]);
            const T ddx = lerp(dx0, dx1, w[2]);
            const T ddy = lerp(cx[2] - cx[0], cx[3] - cx[1], w[2]);
            const T ddz = cxy1 - cxy0;
            T* d = dout + n * 3 * D + lvl * F + f;
            d[0] = ddx * r;
            d[D] = ddy * r;
            d[2 * D] = ddz * r;
          }
        }
      }
    }
  }
}

// d loss / d the derivatives (n, 3, D): dense (gd), or the rank-1 product a head's normals give, gc (n, 3) (x)
// gv (n, D) (mlp_head_cpu's factorised backward: d c / d jac = v per point), read without forming the (n, 3, D)
// tensor.
template <typename T>
struct DerivGrad {
  const T* gd;
  const T* gc;
  const T* gv;
  explicit operator bool() const { return gd || gc; }
  // the 3 spatial components of point n's entry k
  void at(int64_t n, int64_t D, int64_t k, T d[3]) const {
    if (gd) {
      const T* p = gd + n * 3 * D + k;
      d[0] = p[0], d[1] = p[D], d[2] = p[2 * D];
    } else {
      const T v = gv[n * D + k];
      for (int c = 0; c < 3; ++c) d[c] = gc[3 * n + c] * v;
    }
  }
};

// Adds the gradient of points [n0, n1) at level lvl into gt (strided like the table).
template <typename T>
inline void backward_level(const Grid& g, int lvl, int64_t n0, int64_t n1, const T* x, const T* res,
                           const T* gf, const DerivGrad<T>& gd, T* gt) {
  const int F = g.f;
  const int64_t D = int64_t(g.l) * F;
  const T r = res[lvl];
  const int64_t r_max = static_cast<int64_t>(r) - 1;
  for (int64_t n = n0; n < n1; ++n) {
    int64_t idx[8];
    T w[3];
    cell<T>(g, lvl, r, r_max, x + 3 * n, idx, w);
    const T wx[2] = {T(1) - w[0], w[0]};
    const T wy[2] = {T(1) - w[1], w[1]}, wz[2] = {T(1) - w[2], w[2]};
    T p[4];  // wy wz of the corner pairs (b, c)
    for (int b = 0; b < 2; ++b)
      for (int c = 0; c < 2; ++c) p[2 * b + c] = wy[b] * wz[c];
    for (int f = 0; f < F; ++f) {
      const T gv = gf ? gf[n * D + lvl * F + f] : T(0);
      // d value / d corner (a, b, c) = wx[a] wy[b] wz[c]; d (d value / dx_k) / d corner = the same with the k-th
      // factor replaced by -+1 (times r): coef = wx[a] (p[bc] gv + q[bc]) + (2a - 1) p[bc] gx.
      T q[4] = {0, 0, 0, 0}, gx = 0;
      if (gd) {
        T d[3];
        gd.at(n, D, lvl * F + f, d);
        gx = d[0] * r;
        const T gy = d[1] * r, gz = d[2] * r;
        for (int b = 0; b < 2; ++b)
          for (int c = 0; c < 2; ++c) q[2 * b + c] = (b ? gy : -gy) * wz[c] + wy[b] * (c ? gz : -gz);
      }
      T* tf = gt + f * g.s_f;
      for (int bc = 0; bc < 4; ++bc) {
        const T u = p[bc] * gv + q[bc], v = p[bc] * gx;
        tf[idx[bc] * g.s_m] += wx[0] * u - v;
        tf[idx[4 + bc] * g.s_m] += wx[1] * u + v;
      }
    }
  }
}

// gt (zeroed, strided like the table) += d loss / d table. mode 0: levels split among threads (deterministic);
// mode 1: point chunks with per-thread gradient tables, then a reduction.
template <typename T>
void backward_impl(const Grid& g, const T* x, const T* res, const T* gf, const DerivGrad<T>& gd, T* gt,
                   int mode) {
  if (mode == 0) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int lvl = 0; lvl < g.l; ++lvl) backward_level<T>(g, lvl, 0, g.n, x, res, gf, gd, gt);
    return;
  }
  const int F = g.f;
  const int nt = omp_get_max_threads();
  const int64_t min_points = 2048;
  const int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(nt, g.n / min_points));
  if (n_chunks == 1) {
    for (int lvl = 0; lvl < g.l; ++lvl) backward_level<T>(g, lvl, 0, g.n, x, res, gf, gd, gt);
    return;
  }
  // chunk 0 writes into gt itself, chunks 1.. into private (F, M) tables (dense layout: s_f = M, s_m = 1)
  const int64_t fm = int64_t(F) * g.m;
  std::vector<T> bufs(size_t((n_chunks - 1) * fm), T(0));
  Grid gb = g;
  gb.s_f = g.m;
  gb.s_m = 1;
#pragma omp parallel for schedule(static, 1)
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    const int64_t n0 = g.n * ch / n_chunks, n1 = g.n * (ch + 1) / n_chunks;
    for (int lvl = 0; lvl < g.l; ++lvl) {
      if (ch == 0) backward_level<T>(g, lvl, n0, n1, x, res, gf, gd, gt);
      else backward_level<T>(gb, lvl, n0, n1, x, res, gf, gd, bufs.data() + (ch - 1) * fm);
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < g.m; ++j)
    for (int f = 0; f < F; ++f) {
      T s = gt[f * g.s_f + j * g.s_m];
      for (int64_t ch = 1; ch < n_chunks; ++ch) s += bufs[(ch - 1) * fm + int64_t(f) * g.m + j];
      gt[f * g.s_f + j * g.s_m] = s;
    }
}

// F = 2 (every field config here), a contiguous (F, M) table: the per-point work vectorised over points (omp simd;
// the compiler's gathers fetch the 8 corners of 8 points at once). The same arithmetic as the scalar code in the
// same order: the results are the same to the bit (tests/test_fields_hashgrid_native.py). 32-bit indices
// (tables under 2^31 entries, checked by the dispatch).

// The cell of the point at XP (3 coordinates) at one level, for the vector loops below: cell()'s arithmetic (the
// same clamp, truncation and fraction; Instant-NGP eq. 4's hash on uint32), declaring the fractions w0, w1, w2 and
// the corner indices c0 .. c7 (x-major). A macro, not an inline function: GCC 12 did not vectorise the loops
// around the function (its reference outputs: "control flow in loop"), which made both kernels 1.5x slower. Needs
// HASHED and the level's r, r_max, off, s1, s2, mask in scope.
#define D3HG_CELL_F2(XP)                                                                                       \
  T w0, w1, w2;                                                                                              \
  uint32_t i0, i1, i2;                                                                                       \
  D3HG_AXIS((XP)[0], i0, w0);                                                                                \
  D3HG_AXIS((XP)[1], i1, w1);                                                                                \
  D3HG_AXIS((XP)[2], i2, w2);                                                                                \
  const uint32_t x0_ = i0, x1_ = i0 + 1u;                                                                    \
  const uint32_t y0_ = HASHED ? i1 * 2654435761u : i1 * s1, y1_ = HASHED ? (i1 + 1u) * 2654435761u : y0_ + s1; \
  const uint32_t z0_ = HASHED ? i2 * 805459861u : i2 * s2, z1_ = HASHED ? (i2 + 1u) * 805459861u : z0_ + s2; \
  const uint32_t c0 = D3HG_CORNER(x0_, y0_, z0_), c1 = D3HG_CORNER(x0_, y0_, z1_);                           \
  const uint32_t c2 = D3HG_CORNER(x0_, y1_, z0_), c3 = D3HG_CORNER(x0_, y1_, z1_);                           \
  const uint32_t c4 = D3HG_CORNER(x1_, y0_, z0_), c5 = D3HG_CORNER(x1_, y0_, z1_);                           \
  const uint32_t c6 = D3HG_CORNER(x1_, y1_, z0_), c7 = D3HG_CORNER(x1_, y1_, z1_);
#define D3HG_AXIS(XK, I, W)                                                                                    \
  {                                                                                                          \
    const T pos = (XK) * r;                                                                                  \
    T pc = pos > T(0) ? pos : T(0); /* NaN -> 0 */                                                           \
    pc = pc < r_max ? pc : r_max;                                                                            \
    I = static_cast<uint32_t>(static_cast<int32_t>(pc));                                                     \
    W = pos - static_cast<T>(static_cast<int32_t>(pc));                                                      \
  }
#define D3HG_CORNER(A, B, C) (HASHED ? off + (((A) ^ (B) ^ (C)) & mask) : off + (A) + (B) + (C))
#define D3HG_LEVEL_F2(G, LVL, R)                                                                               \
  const T r = (R);                                                                                           \
  const T r_max = static_cast<T>(static_cast<int64_t>(r) - 1);                                               \
  const uint32_t off = static_cast<uint32_t>((G).offsets[LVL]);                                              \
  const uint32_t s1 = static_cast<uint32_t>((G).strides[3 * (LVL) + 1]);                                     \
  const uint32_t s2 = static_cast<uint32_t>((G).strides[3 * (LVL) + 2]);                                     \
  const uint32_t mask = (G).hash_mask;

// Forward of one level for points [n0, n1) of a chunk: features and derivatives written in place.

template <typename T, bool HASHED, bool GRAD>
inline void forward_level_f2(const Grid& g, int lvl, T r_lvl, int64_t n0, int64_t n1, const T* x, const T* table,
                             T* out, T* dout) {
  const int64_t D = int64_t(g.l) * 2;
  D3HG_LEVEL_F2(g, lvl, r_lvl)
  const T* t0 = table;
  const T* t1 = table + g.s_f;
#pragma omp simd
  for (int64_t n = n0; n < n1; ++n) {
    D3HG_CELL_F2(x + 3 * n)
    for (int f = 0; f < 2; ++f) {
      const T* tf = f ? t1 : t0;
      const T v0 = tf[c0], v1 = tf[c1], v2 = tf[c2], v3 = tf[c3];
      const T v4 = tf[c4], v5 = tf[c5], v6 = tf[c6], v7 = tf[c7];
      const T cx0 = lerp(v0, v4, w0), cx1 = lerp(v1, v5, w0), cx2 = lerp(v2, v6, w0), cx3 = lerp(v3, v7, w0);
      const T cxy0 = lerp(cx0, cx2, w1), cxy1 = lerp(cx1, cx3, w1);
      out[n * D + lvl * 2 + f] = lerp(cxy0, cxy1, w2);
      if (GRAD) {
        const T dx0 = lerp(v4 - v0, v6 - v2, w1), dx1 = lerp(v5 - v1, v7 - v3, w1);
        const T ddx = lerp(dx0, dx1, w2);
        const T ddy = lerp(cx2 - cx0, cx3 - cx1, w2);
        const T ddz = cxy1 - cxy0;
        T* d = dout + n * 3 * D + lvl * 2 + f;
        d[0] = ddx * r;
        d[D] = ddy * r;
        d[2 * D] = ddz * r;
      }
    }
  }
}

// forward_impl's chunks and level order, each level's points vectorised.
template <typename T>
void forward_f2(const Grid& g, const T* x, const T* table, const T* res, T* out, T* dout) {
  int64_t n_chunks, chunk;
  forward_chunks(g.n, n_chunks, chunk);
#pragma omp parallel for schedule(static)
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    const int64_t n0 = std::min(g.n, ch * chunk), n1 = std::min(g.n, n0 + chunk);
    for (int lvl = 0; lvl < g.l; ++lvl) {
      const T r = res[lvl];
      const bool hashed = lvl >= g.n_dense;
      if (dout) {
        if (hashed) forward_level_f2<T, true, true>(g, lvl, r, n0, n1, x, table, out, dout);
        else forward_level_f2<T, false, true>(g, lvl, r, n0, n1, x, table, out, dout);
      } else {
        if (hashed) forward_level_f2<T, true, false>(g, lvl, r, n0, n1, x, table, out, dout);
        else forward_level_f2<T, false, false>(g, lvl, r, n0, n1, x, table, out, dout);
      }
    }
  }
}

// Backward of one level for F = 2, points [n0, n1): per block of points, the cell, the 8 corner indices and their
// 2 x 8 coefficients vectorised (as the scalar backward_level computes them), then the scatter-adds in point
// order. gf must not be null (backward_f2 passes zeros).
template <typename T, bool HASHED, int GRAD>
inline void backward_level_f2(const Grid& g, int lvl, int64_t n0, int64_t n1, const T* x, const T* res,
                              const T* gf, const DerivGrad<T>& gd, T* gt) {
  constexpr int B = 64;
  const int64_t D = int64_t(g.l) * 2;
  D3HG_LEVEL_F2(g, lvl, res[lvl])
  T* t0 = gt;
  T* t1 = gt + g.s_f;
  alignas(64) uint32_t idx[8][B];
  alignas(64) T cf[2][8][B];
  for (int64_t b0 = n0; b0 < n1; b0 += B) {
    const int nb = int(std::min<int64_t>(n1 - b0, B));
    const T* xb = x + 3 * b0;
    const T* gfb = gf + b0 * D + lvl * 2;
    const T* gdb = GRAD == 1 ? gd.gd + b0 * 3 * D + lvl * 2 : nullptr;
    const T* gcb = GRAD == 2 ? gd.gc + b0 * 3 : nullptr;
    const T* gvb = GRAD == 2 ? gd.gv + b0 * D + lvl * 2 : nullptr;
#pragma omp simd
    for (int p = 0; p < nb; ++p) {
      D3HG_CELL_F2(xb + 3 * p)
      idx[0][p] = c0;
      idx[1][p] = c1;
      idx[2][p] = c2;
      idx[3][p] = c3;
      idx[4][p] = c4;
      idx[5][p] = c5;
      idx[6][p] = c6;
      idx[7][p] = c7;
      const T wx0 = T(1) - w0, wy0 = T(1) - w1, wz0 = T(1) - w2;
      const T p00 = wy0 * wz0, p01 = wy0 * w2, p10 = w1 * wz0, p11 = w1 * w2;
      for (int f = 0; f < 2; ++f) {
        const T gv = gfb[p * D + f];
        T q00 = 0, q01 = 0, q10 = 0, q11 = 0, gx = 0;
        if (GRAD) {
          T gy, gz;
          if (GRAD == 1) {
            const T* d = gdb + p * 3 * D + f;
            gx = d[0] * r;
            gy = d[D] * r;
            gz = d[2 * D] * r;
          } else {  // the same products the dense gradient holds: (gc_k v_f) r
            const T vf = gvb[p * D + f];
            gx = (gcb[3 * p] * vf) * r;
            gy = (gcb[3 * p + 1] * vf) * r;
            gz = (gcb[3 * p + 2] * vf) * r;
          }
          q00 = -gy * wz0 + wy0 * -gz;
          q01 = -gy * w2 + wy0 * gz;
          q10 = gy * wz0 + w1 * -gz;
          q11 = gy * w2 + w1 * gz;
        }
        const T u00 = p00 * gv + q00, u01 = p01 * gv + q01, u10 = p10 * gv + q10, u11 = p11 * gv + q11;
        const T v00 = p00 * gx, v01 = p01 * gx, v10 = p10 * gx, v11 = p11 * gx;
        cf[f][0][p] = wx0 * u00 - v00;
        cf[f][1][p] = wx0 * u01 - v01;
        cf[f][2][p] = wx0 * u10 - v10;
        cf[f][3][p] = wx0 * u11 - v11;
        cf[f][4][p] = w0 * u00 + v00;
        cf[f][5][p] = w0 * u01 + v01;
        cf[f][6][p] = w0 * u10 + v10;
        cf[f][7][p] = w0 * u11 + v11;
      }
    }
    for (int p = 0; p < nb; ++p) {
      for (int bc = 0; bc < 4; ++bc) {
        t0[idx[bc][p]] += cf[0][bc][p];
        t0[idx[4 + bc][p]] += cf[0][4 + bc][p];
      }
      for (int bc = 0; bc < 4; ++bc) {
        t1[idx[bc][p]] += cf[1][bc][p];
        t1[idx[4 + bc][p]] += cf[1][4 + bc][p];
      }
    }
  }
}

#undef D3HG_CELL_F2
#undef D3HG_AXIS
#undef D3HG_CORNER
#undef D3HG_LEVEL_F2

template <typename T>
void backward_f2(const Grid& g, const T* x, const T* res, const T* gf, const DerivGrad<T>& gd, T* gt) {
  // Each thread owns the levels lvl = tid (mod threads) and walks the points in chunks, all its levels per chunk:
  // the chunk's rows of gf / gd stay in cache for its levels (level by level over all points read the (N, 3, D)
  // gradient once per level: 8 x 7.7 MB for a 40k-sample view). One writer per level: deterministic.
  constexpr int64_t kChunk = 2048;
  std::vector<T> zeros;
  if (!gf) {
    zeros.assign(std::size_t(g.n * g.l * 2), T(0));
    gf = zeros.data();
  }
#pragma omp parallel
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int64_t c0 = 0; c0 < g.n; c0 += kChunk) {
      const int64_t c1 = std::min(g.n, c0 + kChunk);
      for (int lvl = tid; lvl < g.l; lvl += nt) {
        const bool hashed = lvl >= g.n_dense;
        if (gd.gd) {
          if (hashed) backward_level_f2<T, true, 1>(g, lvl, c0, c1, x, res, gf, gd, gt);
          else backward_level_f2<T, false, 1>(g, lvl, c0, c1, x, res, gf, gd, gt);
        } else if (gd.gc) {
          if (hashed) backward_level_f2<T, true, 2>(g, lvl, c0, c1, x, res, gf, gd, gt);
          else backward_level_f2<T, false, 2>(g, lvl, c0, c1, x, res, gf, gd, gt);
        } else {
          if (hashed) backward_level_f2<T, true, 0>(g, lvl, c0, c1, x, res, gf, gd, gt);
          else backward_level_f2<T, false, 0>(g, lvl, c0, c1, x, res, gf, gd, gt);
        }
      }
    }
  }
}

// F = 2 on a contiguous table under 2^31 entries (every field config here): the vectorised kernels above; any
// other (F != 2, a strided table: the tests) the generic scalar kernels.
inline bool vectorised(const Grid& g) { return g.f == 2 && g.s_m == 1 && g.m < (int64_t(1) << 31); }

template <typename T>
void forward_dispatch(const Grid& g, const T* x, const T* table, const T* res, T* out, T* dout) {
  if (vectorised(g)) return forward_f2<T>(g, x, table, res, out, dout);
  forward_impl<T>(g, x, table, res, out, dout);
}

template <typename T>
void backward_dispatch(const Grid& g, const T* x, const T* res, const T* gf, const DerivGrad<T>& gd, T* gt,
                       int mode) {
  if (vectorised(g) && mode == 0) return backward_f2<T>(g, x, res, gf, gd, gt);
  backward_impl<T>(g, x, res, gf, gd, gt, mode);
}

// out (n, 3) = sum_j jac (n, 3, d) * v (n, d): the spatial gradient of a scalar read through the features.
template <typename T>
void contract_impl(int64_t n, int d, const T* jac, const T* v, T* out) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* vi = v + i * d;
    for (int k = 0; k < 3; ++k) {
      const T* ji = jac + (i * 3 + k) * d;
      T s = 0;
      for (int j = 0; j < d; ++j) s += ji[j] * vi[j];
      out[i * 3 + k] = s;
    }
  }
}

// Its backward for g (n, 3): grad_jac = g (x) v (n, 3, d), grad_v = sum_k g_k jac_k (n, d); either may be null.
template <typename T>
void contract_backward_impl(int64_t n, int d, const T* jac, const T* v, const T* g, T* grad_jac, T* grad_v) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* vi = v + i * d;
    const T* gi = g + i * 3;
    if (grad_jac)
      for (int k = 0; k < 3; ++k)
        for (int j = 0; j < d; ++j) grad_jac[(i * 3 + k) * d + j] = gi[k] * vi[j];
    if (grad_v)
      for (int j = 0; j < d; ++j)
        grad_v[i * d + j] = gi[0] * jac[(i * 3) * d + j] + gi[1] * jac[(i * 3 + 1) * d + j] +
                            gi[2] * jac[(i * 3 + 2) * d + j];
  }
}

Grid make_grid(int64_t n, int64_t m, int64_t s_f, int64_t s_m, int f, int l, int n_dense, uint32_t hash_mask,
               const int64_t* offsets, const int64_t* strides) {
  Grid g;
  g.n = n; g.m = m; g.s_f = s_f; g.s_m = s_m; g.f = f; g.l = l; g.n_dense = n_dense; g.hash_mask = hash_mask;
  g.offsets = offsets; g.strides = strides;
  return g;
}

}  // namespace

extern "C" {

int d3hg_version() { return 2; }
int d3hg_max_threads() { return omp_get_max_threads(); }  // the OpenMP thread count a kernel would use here

// 0 on success, -1 on a C++ exception (none is expected: mode 1's buffers are the only allocation).
#define D3HG_DEFINE(SUFFIX, T)                                                                                 \
  int d3hg_forward_##SUFFIX(int64_t n, const T* x, const T* table, int64_t m, int64_t s_f, int64_t s_m,       \
                            int f, int l, int n_dense, uint32_t hash_mask, const T* res,                      \
                            const int64_t* offsets, const int64_t* strides, T* out, T* dout) {                \
    try {                                                                                                    \
      Grid g = make_grid(n, m, s_f, s_m, f, l, n_dense, hash_mask, offsets, strides);                        \
      forward_dispatch<T>(g, x, table, res, out, dout);                                                      \
      return 0;                                                                                              \
    } catch (...) {                                                                                          \
      return -1;                                                                                             \
    }                                                                                                        \
  }                                                                                                          \
  int d3hg_backward_##SUFFIX(int64_t n, const T* x, T* grad_table, int64_t m, int64_t s_f, int64_t s_m,       \
                             int f, int l, int n_dense, uint32_t hash_mask, const T* res,                     \
                             const int64_t* offsets, const int64_t* strides, const T* grad_out,              \
                             const T* grad_dout, const T* grad_c, const T* grad_v, int mode) {               \
    try {                                                                                                    \
      Grid g = make_grid(n, m, s_f, s_m, f, l, n_dense, hash_mask, offsets, strides);                        \
      const DerivGrad<T> gd{grad_dout, grad_dout ? nullptr : grad_c, grad_dout ? nullptr : grad_v};          \
      backward_dispatch<T>(g, x, res, grad_out, gd, grad_table, mode);                                       \
      return 0;                                                                                              \
    } catch (...) {                                                                                          \
      return -1;                                                                                             \
    }                                                                                                        \
  }                                                                                                          \
  void d3hg_contract_##SUFFIX(int64_t n, int d, const T* jac, const T* v, T* out) {                           \
    contract_impl<T>(n, d, jac, v, out);                                                                     \
  }                                                                                                          \
  void d3hg_contract_backward_##SUFFIX(int64_t n, int d, const T* jac, const T* v, const T* g, T* grad_jac,   \
                                       T* grad_v) {                                                          \
    contract_backward_impl<T>(n, d, jac, v, g, grad_jac, grad_v);                                            \
  }

D3HG_DEFINE(f32, float)
D3HG_DEFINE(f64, double)

}  // extern "C"
"""

NATIVE = NativeLibrary(
    "distill3d_hashgrid", _SOURCE, "hash-grid kernels", version=("d3hg_version", 2),
    kernels={"d3hg_forward": ("lppllliiiuppppp", "i"), "d3hg_backward": ("lppllliiiupppppppi", "i"),
             "d3hg_contract": ("lippp", None), "d3hg_contract_backward": ("lippppp", None)},
    functions={"d3hg_max_threads": ("", "i")})


def library() -> ctypes.CDLL | None:
    """The compiled kernels (built on first call), or None when they cannot be built (one warning logged)."""
    return NATIVE.get()


def kernel_threads() -> int:
    """The number of threads the kernels use when called from this thread (torch's intra-op count)."""
    lib = NATIVE.library()
    torch.get_num_threads()
    return int(lib.d3hg_max_threads())


def available() -> bool:
    """True when the native kernels are enabled (``DISTILL3D_NATIVE``) and built."""
    return NATIVE.available()


class GridMeta:
    """The indexing inputs of the kernels for one encoding: resolutions (L,) (table dtype), offsets (L,) and direct
    strides (L, 3) (int64), the number of leading directly indexed levels, the hash mask T - 1."""

    def __init__(self, res: torch.Tensor, offsets: torch.Tensor, strides: torch.Tensor, n_dense: int, hash_mask: int):
        if not 0 <= hash_mask < 2**32 or hash_mask & (hash_mask + 1):
            raise ValueError("the hash table size must be a power of two <= 2^32")
        self.res = res.contiguous()
        self.offsets = offsets.to(torch.int64).contiguous()
        self.strides = strides.to(torch.int64).contiguous()
        self.n_levels = int(res.shape[0])
        self.n_dense = int(n_dense)
        self.hash_mask = int(hash_mask)
        # table columns the levels address (the kernels index without bounds checks: checked once per call here)
        ends = []
        for lvl in range(self.n_levels):
            r = int(self.res[lvl])
            if r < 1 or float(self.res[lvl]) != r:
                raise ValueError("level resolutions must be positive integers")
            if lvl < self.n_dense:
                s = self.strides[lvl].tolist()
                if s != [1, r + 1, (r + 1) ** 2]:
                    raise ValueError(f"level {lvl}: direct strides must be (1, r + 1, (r + 1)^2), got {s}")
                ends.append(int(self.offsets[lvl]) + (r + 1) ** 3)
            else:
                ends.append(int(self.offsets[lvl]) + hash_mask + 1)
        if self.n_levels and min(self.offsets.tolist()) < 0:
            raise ValueError("negative level offset")
        self.table_entries = max(ends, default=0)


def _check(x01: torch.Tensor, table: torch.Tensor, meta: GridMeta) -> None:
    if x01.device.type != "cpu" or table.device.type != "cpu":
        raise ValueError("native hash grid: CPU tensors only")
    if x01.dtype != table.dtype or table.dtype not in (torch.float32, torch.float64) or meta.res.dtype != table.dtype:
        raise ValueError(f"native hash grid: float32/float64 of one dtype, got {x01.dtype}, {table.dtype}, "
                         f"{meta.res.dtype}")
    if x01.dim() != 2 or x01.shape[1] != 3 or not x01.is_contiguous():
        raise ValueError("native hash grid: x01 must be a contiguous (N, 3) tensor")
    if table.dim() != 2 or table.shape[1] < meta.table_entries:
        raise ValueError(f"native hash grid: table must be (F, M >= {meta.table_entries}), got {tuple(table.shape)}")


def forward(x01: torch.Tensor, table: torch.Tensor, meta: GridMeta, with_grad: bool
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x01 (N, 3) in [0, 1] (clamped), table (F, M) -> features (N, L*F) level-major and, with ``with_grad``, their
    derivatives w.r.t. x01 (N, 3, L*F). No autograd (see :class:`HashGridFunction`). The table may be strided."""
    fn = NATIVE.kernel("d3hg_forward", table.dtype)
    _check(x01, table, meta)
    n, (f, m) = x01.shape[0], table.shape
    d = meta.n_levels * f
    out = torch.empty(n, d, dtype=table.dtype)
    dout = torch.empty(n, 3, d, dtype=table.dtype) if with_grad else None
    if n == 0:
        return out, dout
    if fn(n, ptr(x01), ptr(table), m, table.stride(0), table.stride(1), f, meta.n_levels, meta.n_dense,
          meta.hash_mask, ptr(meta.res), ptr(meta.offsets), ptr(meta.strides), ptr(out), ptr(dout)):
        raise RuntimeError("native hash-grid forward failed")
    return out, dout


def backward(x01: torch.Tensor, table_shape: tuple[int, int], dtype: torch.dtype, meta: GridMeta,
             grad_out: torch.Tensor | None, grad_dout: torch.Tensor | None, mode: int = 0,
             grad_dout_factors: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Gradient of the table (F, M) given d loss / d features (N, L*F) and / or d loss / d derivatives
    (N, 3, L*F): scatter-add of the trilinear weights (and of their spatial derivatives). ``grad_dout_factors``
    (gc (N, 3), gv (N, L*F)) stands for grad_dout = gc (x) gv without forming it (a head's normals give that rank-1
    gradient; ``mlp_head_cpu.EncodedFieldHeadFunction``). ``mode`` 0 splits the levels among threads
    (deterministic), 1 gives each thread a private table over a point chunk (then sums)."""
    fn = NATIVE.kernel("d3hg_backward", dtype)
    f, m = table_shape
    n, d = x01.shape[0], meta.n_levels * f
    _check(x01, torch.empty(0, m, dtype=dtype), meta)
    grad_table = torch.zeros(f, m, dtype=dtype)
    if n == 0:
        return grad_table
    expected = {"grad of features": (n, d), "grad of derivatives": (n, 3, d), "grad_dout_factors' gc": (n, 3),
                "grad_dout_factors' gv": (n, d)}
    gc, gv = grad_dout_factors if grad_dout_factors is not None and grad_dout is None else (None, None)
    held = {}  # contiguous copies held for the call (a temporary's memory would be freed before it)
    for name, t in zip(expected, (grad_out, grad_dout, gc, gv)):
        if t is not None:
            held[name] = t = t.to(dtype).contiguous()
            if t.shape != expected[name]:
                raise ValueError(f"{name}: expected {expected[name]}, got {tuple(t.shape)}")
    grad_out, grad_dout, gc, gv = (held.get(name) for name in expected)
    if fn(n, ptr(x01), ptr(grad_table), m, grad_table.stride(0), grad_table.stride(1), f, meta.n_levels,
          meta.n_dense, meta.hash_mask, ptr(meta.res), ptr(meta.offsets), ptr(meta.strides), ptr(grad_out),
          ptr(grad_dout), ptr(gc), ptr(gv), int(mode)):
        raise RuntimeError("native hash-grid backward failed")
    return grad_table


class HashGridFunction(torch.autograd.Function):
    """Differentiable (w.r.t. the table only, first order) fused encoding: ``apply(table, x01, meta, with_grad)``
    -> features (N, L*F), or (features, derivatives (N, 3, L*F)) with ``with_grad``. x01 gets no gradient."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, x01: torch.Tensor, meta: GridMeta, with_grad: bool):
        if ctx.needs_input_grad[1]:
            raise RuntimeError("the native hash grid gives no gradient w.r.t. the points: x01 must not require grad "
                               "(HashGridEncoding takes its torch code when x requires grad)")
        out, dout = forward(x01, table, meta, with_grad)
        ctx.save_for_backward(x01)
        ctx.meta, ctx.with_grad, ctx.table_shape = meta, with_grad, tuple(table.shape)
        ctx.set_materialize_grads(False)
        return (out, dout) if with_grad else out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_dout=None):
        (x01,) = ctx.saved_tensors
        if grad_out is None and grad_dout is None:
            return None, None, None, None
        dtype = x01.dtype
        grad_table = backward(x01, ctx.table_shape, dtype, ctx.meta, grad_out, grad_dout)
        return grad_table, None, None, None


class ContractFunction(torch.autograd.Function):
    """``apply(jac, v)``: (N, 3, D) . (N, D) -> (N, 3), the spatial gradient of a scalar whose gradient w.r.t. the
    features is v, in one pass (torch's broadcast multiply + sum and their backward cost 4x more here);
    differentiable w.r.t. both (first order). Both contiguous, of the kernels' dtype."""

    @staticmethod
    def forward(ctx, jac: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        fn = NATIVE.kernel("d3hg_contract", jac.dtype)
        jac, v = jac.contiguous(), v.to(jac.dtype).contiguous()
        n, d = v.shape
        if jac.shape != (n, 3, d):
            raise ValueError(f"contract: jac {tuple(jac.shape)} does not match v {tuple(v.shape)}")
        out = torch.empty(n, 3, dtype=jac.dtype)
        if n:
            fn(n, d, ptr(jac), ptr(v), ptr(out))
        ctx.save_for_backward(jac, v)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        jac, v = ctx.saved_tensors
        need_jac, need_v = ctx.needs_input_grad[:2]
        n, d = v.shape
        grad_jac = torch.empty_like(jac) if need_jac else None
        grad_v = torch.empty_like(v) if need_v else None
        if n and (need_jac or need_v):
            fn = NATIVE.kernel("d3hg_contract_backward", jac.dtype)
            g = g.to(jac.dtype).contiguous()  # held: a temporary's memory would be freed before the call
            fn(n, d, ptr(jac), ptr(v), ptr(g), ptr(grad_jac), ptr(grad_v))
        return grad_jac, grad_v

