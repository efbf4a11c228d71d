"""The CPU volume renderer's fused kernels, in C++: the samples of every ray with empty-space skipping
(``sample_rays``), and their shading and compositing (``CompositeFunction``).

Sampling: ``n_samples`` stratified intervals per ray over its intersection with the [-bound, bound]^3 box (the
slab test of ``volume.ray_box_intersect``), a point in each, kept where the occupancy grid's cell holding it is
occupied; the kept samples come packed, ray by ray in order along the ray. The same arithmetic as the torch code
of ``volume._render_batched`` in the same order (no fused multiply-adds), so the same samples are kept.

Compositing: per ray, the NeRF quadrature (DreamFusion Sec. 3.1, Mildenhall 2020)

    w_i = T_i (1 - exp(-sigma_i delta_i)),  T_i = exp(-sum_{j<i} sigma_j delta_j)

over the ray's samples in order, each sample's colour shaded on the fly (albedo, or Lambertian / textureless with
the ray's light: ``shading.lambertian``), and the sums rgb = sum w_i c_i, opacity = sum w_i, depth = sum w_i t_i,
normal = sum w_i n_i; the backward in one reverse scan per ray,

    dL/dsigma_k = delta_k (g_k T_{k+1} - sum_{i>k} g_i w_i),  g_i = dL/dw_i (from every sum and from w itself).

Why native code here: the renderer's CPU path (``volume._render_batched``) did both as torch ops over the dense
(rays, samples) grid (intersections, interval edges, points, occupancy lookup, selection), then nerfacc's batched
weights over that grid (a scatter of sigma into it, exclusive cumsum, exp, gathers) and nerfacc's packed
``accumulate_along_rays`` per output, with the shading as (M, 3) tensor ops: ~40 small passes over memory and their
backward, a fifth of a distillation step's render + backward on a red cube. nerfacc's packed rendering and
occupancy grid, which would do it in few passes, need CUDA. The samples of ray r are ``offsets[r]`` to
``offsets[r + 1] - 1`` (skipped samples have sigma = 0: they change nothing).

Built and loaded by ``native_build.NativeLibrary``; ``DISTILL3D_NATIVE=0`` forces nerfacc's path.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from distill3d.native_build import NativeLibrary, ptr

SHADING_CODES = {"albedo": 0, "lambertian": 1, "textureless": 2}

_SOURCE = r"""
// distill3d volume compositing with shading, fused CPU kernels (see distill3d/render/volume_cpu.py).
#include <cmath>
#include <cstdint>
#include <omp.h>

namespace {

// Ray r's samples: its slab-test interval [t_near, t_far] (t_far = t_near when it misses the box), S intervals at
// fractions edges[0..S] of it, the point at u in each (u = null: 0.5), kept when the occupancy grid (null: none) has
// its cell. fp-contract off (the pragma, for every function down to the samplers' kernels, so they inline into each
// other): each product rounded before the sum, as torch's separate element-wise ops do.
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
template <typename T>
struct RaySampler {
  int64_t S;
  const T *o, *d;
  T bound;
  const T *edges, *u;
  const uint8_t* occ;
  int64_t res;
  T width, inv_width;
  bool pow2;  // 2b a power of two: (x + b) * (1 / 2b) is the torch code's (x + b) / 2b to the bit, without a division

  RaySampler(int64_t S_, const T* o_, const T* d_, T bound_, const T* edges_, const T* u_, const uint8_t* occ_,
             int64_t res_)
      : S(S_), o(o_), d(d_), bound(bound_), edges(edges_), u(u_), occ(occ_), res(res_), width(T(2) * bound_) {
    int e2;
    pow2 = std::frexp(width, &e2) == T(0.5);
    inv_width = T(1) / width;
  }

  // the ray's box interval: false when it misses the box (no sample is valid)
  bool interval(int64_t r, T& tn, T& span) const {
    const T* orr = o + 3 * r;
    const T* drr = d + 3 * r;
    T tf = INFINITY;
    tn = -INFINITY;
    for (int a = 0; a < 3; ++a) {
      const T dv = drr[a];
      const T inv = T(1) / ((dv < T(0) ? -dv : dv) < T(1e-12) ? T(1e-12) : dv);
      const T ta = (-bound - orr[a]) * inv, tb = (bound - orr[a]) * inv;
      const T lo = ta < tb ? ta : tb, hi = ta > tb ? ta : tb;
      tn = lo > tn ? lo : tn;
      tf = hi < tf ? hi : tf;
    }
    tn = tn > T(0) ? tn : T(0);
    span = tf - tn;
    return tf > tn;
  }

  // sample k of ray r: interval [ts, te], evaluation point tmid and position x
  void sample(int64_t r, int64_t k, T tn, T span, T& ts, T& te, T& tmid, T x[3]) const {
    ts = tn + span * edges[k];
    te = tn + span * edges[k + 1];
    tmid = ts + (te - ts) * (u ? u[r * S + k] : T(0.5));
    for (int a = 0; a < 3; ++a) x[a] = o[3 * r + a] + d[3 * r + a] * tmid;
  }

  // 1 when the grid (or no grid) keeps the point x
  int kept(const T x[3]) const {
    if (!occ) return 1;
    int64_t flat = 0;
    for (int a = 0; a < 3; ++a) {
      const T q = pow2 ? (x[a] + bound) * inv_width : (x[a] + bound) / width;
      const T c = std::floor(q * T(res));
      const int64_t i = c >= T(0) ? (c <= T(res - 1) ? int64_t(c) : res - 1) : 0;  // NaN -> 0
      flat = flat * res + i;
    }
    return occ[flat] != 0;
  }

  // how many of ray r's samples are kept, and with S <= 64 which (bit k: sample k; null: not recorded). No branch
  // on the grid's cells (about half occupied near a surface: a coin flip to the branch predictor).
  int64_t count(int64_t r, uint64_t* mask) const {
    T tn, span;
    if (!interval(r, tn, span)) {
      if (mask) *mask = 0;
      return 0;
    }
    int64_t n = 0;
    uint64_t bits = 0;
    for (int64_t k = 0; k < S; ++k) {
      T ts, te, tm, x[3];
      sample(r, k, tn, span, ts, te, tm, x);
      const int keep = kept(x);
      n += keep;
      bits |= uint64_t(keep) << (k & 63);  // (masks are kept for S <= 64 only)
    }
    if (mask) *mask = bits;
    return n;
  }

  // writes ray r's kept samples from slot `out` on; with the count pass's mask only those samples are computed
  void fill(int64_t r, int64_t out, const uint64_t* mask, T* xs, T* t0, T* t1, T* tm, int64_t* ray_id) const {
    T tn, span;
    if (!interval(r, tn, span)) return;
    int64_t j = out;
    auto put = [&](int64_t k) {
      T ts, te, tmid, x[3];
      sample(r, k, tn, span, ts, te, tmid, x);
      xs[3 * j] = x[0]; xs[3 * j + 1] = x[1]; xs[3 * j + 2] = x[2];
      t0[j] = ts; t1[j] = te; tm[j] = tmid; ray_id[j] = r;
      ++j;
    };
    if (mask) {
      for (uint64_t bits = *mask; bits; bits &= bits - 1) put(__builtin_ctzll(bits));
      return;
    }
    for (int64_t k = 0; k < S; ++k) {
      T ts, te, tmid, x[3];
      sample(r, k, tn, span, ts, te, tmid, x);
      if (kept(x)) put(k);
    }
  }
};

template <typename T>
void sample_count_impl(int64_t n_rays, int64_t S, const T* o, const T* d, T bound, const T* edges, const T* u,
                       const uint8_t* occ, int64_t res, int64_t* counts, uint64_t* masks) {
  const RaySampler<T> rs(S, o, d, bound, edges, u, occ, res);
  if (S > 64) masks = nullptr;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n_rays; ++r) counts[r] = rs.count(r, masks ? masks + r : nullptr);
}

template <typename T>
void sample_fill_impl(int64_t n_rays, int64_t S, const T* o, const T* d, T bound, const T* edges, const T* u,
                      const uint8_t* occ, int64_t res, const int64_t* off, const uint64_t* masks, T* xs, T* t0, T* t1,
                      T* tm, int64_t* ray_id) {
  const RaySampler<T> rs(S, o, d, bound, edges, u, occ, res);
  if (S > 64) masks = nullptr;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n_rays; ++r) rs.fill(r, off[r], masks ? masks + r : nullptr, xs, t0, t1, tm, ray_id);
}
#pragma GCC pop_options

// colour of one sample: mode 0 albedo, 1 albedo * k, 2 k, with k = ambient + (1 - ambient) max(0, n . l)
template <typename T>
inline void shade(int mode, const T* a, const T* n, const T* l, T ambient, T* c, T* dot) {
  if (mode == 0) {
    c[0] = a[0]; c[1] = a[1]; c[2] = a[2];
    *dot = T(0);
    return;
  }
  const T d = n[0] * l[0] + n[1] * l[1] + n[2] * l[2];
  const T k = ambient + (T(1) - ambient) * (d > T(0) ? d : T(0));
  *dot = d;
  if (mode == 1) {
    c[0] = a[0] * k; c[1] = a[1] * k; c[2] = a[2] * k;
  } else {
    c[0] = k; c[1] = k; c[2] = k;
  }
}

template <typename T>
void forward_impl(int64_t n_rays, const int64_t* off, int mode, T ambient, const T* sigma, const T* t0, const T* t1,
                  const T* tm, const T* alb, const T* nrm, const T* light, T* w, T* acc_before, T* rgb, T* opacity,
                  T* depth, T* nrm_out) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r) {
    T acc = 0, cr = 0, cg = 0, cb = 0, op = 0, dp = 0, nx = 0, ny = 0, nz = 0;
    const T* l = light ? light + 3 * r : nullptr;
    for (int64_t i = off[r]; i < off[r + 1]; ++i) {
      const T sd = sigma[i] * (t1[i] - t0[i]);
      const T wi = std::exp(-acc) * (T(1) - std::exp(-sd));  // nerfacc's render_weight_from_density
      acc_before[i] = acc;
      acc += sd;
      w[i] = wi;
      T c[3], dot;
      shade(mode, alb + 3 * i, nrm ? nrm + 3 * i : nullptr, l, ambient, c, &dot);
      cr += wi * c[0]; cg += wi * c[1]; cb += wi * c[2];
      op += wi;
      dp += wi * tm[i];
      if (nrm) {
        nx += wi * nrm[3 * i]; ny += wi * nrm[3 * i + 1]; nz += wi * nrm[3 * i + 2];
      }
    }
    rgb[3 * r] = cr; rgb[3 * r + 1] = cg; rgb[3 * r + 2] = cb;
    opacity[r] = op;
    depth[r] = dp;
    if (nrm_out) {
      nrm_out[3 * r] = nx; nrm_out[3 * r + 1] = ny; nrm_out[3 * r + 2] = nz;
    }
  }
}

// One reverse scan per ray; any gradient pointer may be null (no gradient flows from that output / to that input).
template <typename T>
void backward_impl(int64_t n_rays, const int64_t* off, int mode, T ambient, const T* sigma, const T* t0, const T* t1,
                   const T* tm, const T* alb, const T* nrm, const T* light, const T* w, const T* acc_before,
                   const T* g_w, const T* g_rgb, const T* g_op, const T* g_depth, const T* g_nrm, T* g_sigma,
                   T* g_alb, T* g_n) {
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < n_rays; ++r) {
    const T* l = light ? light + 3 * r : nullptr;
    const T gr[3] = {g_rgb ? g_rgb[3 * r] : T(0), g_rgb ? g_rgb[3 * r + 1] : T(0), g_rgb ? g_rgb[3 * r + 2] : T(0)};
    const T gn[3] = {g_nrm ? g_nrm[3 * r] : T(0), g_nrm ? g_nrm[3 * r + 1] : T(0), g_nrm ? g_nrm[3 * r + 2] : T(0)};
    const T go = g_op ? g_op[r] : T(0), gd = g_depth ? g_depth[r] : T(0);
    T suffix = 0;  // sum_{i > k} g_i w_i
    for (int64_t i = off[r + 1] - 1; i >= off[r]; --i) {
      const T* ni = nrm ? nrm + 3 * i : nullptr;
      T c[3], dot;
      shade(mode, alb + 3 * i, ni, l, ambient, c, &dot);
      T gi = go + gd * tm[i] + gr[0] * c[0] + gr[1] * c[1] + gr[2] * c[2];
      if (g_w) gi += g_w[i];
      if (ni) gi += gn[0] * ni[0] + gn[1] * ni[1] + gn[2] * ni[2];
      const T delta = t1[i] - t0[i];
      const T wi = w[i];
      g_sigma[i] = delta * (gi * std::exp(-(acc_before[i] + sigma[i] * delta)) - suffix);
      suffix += gi * wi;
      const T gc[3] = {wi * gr[0], wi * gr[1], wi * gr[2]};
      T gk = 0;  // d loss / d k (the Lambertian factor)
      if (mode == 0) {
        if (g_alb) { g_alb[3 * i] = gc[0]; g_alb[3 * i + 1] = gc[1]; g_alb[3 * i + 2] = gc[2]; }
      } else {
        const T* a = alb + 3 * i;
        const T k = ambient + (T(1) - ambient) * (dot > T(0) ? dot : T(0));
        if (mode == 1) {
          gk = gc[0] * a[0] + gc[1] * a[1] + gc[2] * a[2];
          if (g_alb) { g_alb[3 * i] = gc[0] * k; g_alb[3 * i + 1] = gc[1] * k; g_alb[3 * i + 2] = gc[2] * k; }
        } else {
          gk = gc[0] + gc[1] + gc[2];
        }
      }
      if (g_n) {
        // clamp_min's gradient passes at dot >= 0, as torch's
        const T gd_dot = (mode != 0 && dot >= T(0)) ? (T(1) - ambient) * gk : T(0);
        for (int j = 0; j < 3; ++j) g_n[3 * i + j] = wi * gn[j] + (l ? gd_dot * l[j] : T(0));
      }
    }
  }
}

// DreamFusion's orientation term per ray, sum_i w_i max(0, n_i . d)^2 over ray r's samples (d: its direction, w:
// constants), and its gradient w.r.t. the normals, g_r 2 w_i max(0, n_i . d) d.
template <typename T>
void orient_forward_impl(int64_t n_rays, const int64_t* off, const T* nrm, const T* w, const T* dirs, T* out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n_rays; ++r) {
    const T* d = dirs + 3 * r;
    T s = 0;
    for (int64_t i = off[r]; i < off[r + 1]; ++i) {
      const T* n = nrm + 3 * i;
      const T dot = n[0] * d[0] + n[1] * d[1] + n[2] * d[2];
      if (dot > T(0)) s += w[i] * dot * dot;
    }
    out[r] = s;
  }
}

template <typename T>
void orient_backward_impl(int64_t n_rays, const int64_t* off, const T* nrm, const T* w, const T* dirs, const T* g,
                          T* g_n) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n_rays; ++r) {
    const T* d = dirs + 3 * r;
    for (int64_t i = off[r]; i < off[r + 1]; ++i) {
      const T* n = nrm + 3 * i;
      const T dot = n[0] * d[0] + n[1] * d[1] + n[2] * d[2];
      const T c = dot > T(0) ? g[r] * T(2) * w[i] * dot : T(0);
      for (int k = 0; k < 3; ++k) g_n[3 * i + k] = c * d[k];
    }
  }
}

}  // namespace

extern "C" {

int d3vc_version() { return 3; }

#define D3VC_DEFINE(S, T)                                                                                          \
  void d3vc_sample_count_##S(int64_t n_rays, int64_t n_samples, const T* o, const T* d, double bound,              \
                             const T* edges, const T* u, const uint8_t* occ, int64_t res, int64_t* counts,         \
                             uint64_t* masks) {                                                                    \
    sample_count_impl<T>(n_rays, n_samples, o, d, T(bound), edges, u, occ, res, counts, masks);                     \
  }                                                                                                                \
  void d3vc_sample_fill_##S(int64_t n_rays, int64_t n_samples, const T* o, const T* d, double bound,               \
                            const T* edges, const T* u, const uint8_t* occ, int64_t res, const int64_t* off,        \
                            const uint64_t* masks, T* xs, T* t0, T* t1, T* tm, int64_t* ray_id) {                   \
    sample_fill_impl<T>(n_rays, n_samples, o, d, T(bound), edges, u, occ, res, off, masks, xs, t0, t1, tm, ray_id); \
  }                                                                                                                \
  void d3vc_forward_##S(int64_t n_rays, const int64_t* off, int mode, double ambient, const T* sigma, const T* t0, \
                        const T* t1, const T* tm, const T* alb, const T* nrm, const T* light, T* w, T* acc_before,  \
                        T* rgb, T* opacity, T* depth, T* nrm_out) {                                                \
    forward_impl<T>(n_rays, off, mode, T(ambient), sigma, t0, t1, tm, alb, nrm, light, w, acc_before, rgb,         \
                    opacity, depth, nrm_out);                                                                      \
  }                                                                                                                \
  void d3vc_backward_##S(int64_t n_rays, const int64_t* off, int mode, double ambient, const T* sigma,            \
                         const T* t0, const T* t1, const T* tm, const T* alb, const T* nrm, const T* light,        \
                         const T* w, const T* acc_before, const T* g_w, const T* g_rgb, const T* g_op,             \
                         const T* g_depth, const T* g_nrm, T* g_sigma, T* g_alb, T* g_n) {                         \
    backward_impl<T>(n_rays, off, mode, T(ambient), sigma, t0, t1, tm, alb, nrm, light, w, acc_before, g_w,        \
                     g_rgb, g_op, g_depth, g_nrm, g_sigma, g_alb, g_n);                                            \
  }                                                                                                                \
  void d3vc_orient_forward_##S(int64_t n_rays, const int64_t* off, const T* nrm, const T* w, const T* dirs,        \
                               T* out) {                                                                           \
    orient_forward_impl<T>(n_rays, off, nrm, w, dirs, out);                                                        \
  }                                                                                                                \
  void d3vc_orient_backward_##S(int64_t n_rays, const int64_t* off, const T* nrm, const T* w, const T* dirs,       \
                                const T* g, T* g_n) {                                                              \
    orient_backward_impl<T>(n_rays, off, nrm, w, dirs, g, g_n);                                                    \
  }

D3VC_DEFINE(f32, float)
D3VC_DEFINE(f64, double)

}  // extern "C"
"""

NATIVE = NativeLibrary(
    "distill3d_volume", _SOURCE, "volume-rendering kernels", version=("d3vc_version", 3),
    kernels={"d3vc_sample_count": ("llppdppplpp", None), "d3vc_sample_fill": ("llppdppplpp" + "p" * 5, None),
             "d3vc_forward": ("lpid" + "p" * 13, None), "d3vc_backward": ("lpid" + "p" * 17, None),
             "d3vc_orient_forward": ("lppppp", None), "d3vc_orient_backward": ("lpppppp", None)})


class RaySamples(NamedTuple):
    """The kept samples of R rays, packed ray by ray in order along each ray: points x (M, 3), interval starts and
    ends and evaluation points t_starts, t_ends, t_mid (M,), ray_id (M,) int64 and offsets (R + 1,) int64 (ray r's
    samples are offsets[r] to offsets[r + 1] - 1)."""

    x: torch.Tensor
    t_starts: torch.Tensor
    t_ends: torch.Tensor
    t_mid: torch.Tensor
    ray_id: torch.Tensor
    offsets: torch.Tensor


def sample_rays(o: torch.Tensor, d: torch.Tensor, bound: float, n_samples: int, u: torch.Tensor | None,
                occupied: torch.Tensor | None) -> RaySamples:
    """Stratified samples of rays o, d (R, 3) inside [-bound, bound]^3: ``n_samples`` equal intervals of each ray's
    intersection with the box, the point at fraction u (R, S) of each (None: the middle), kept where the boolean
    grid ``occupied`` (r, r, r) over the box has the point's cell (None: all kept). No gradients."""
    dt = o.dtype
    r, s = o.shape[0], int(n_samples)
    o, d = o.detach().contiguous(), d.detach().to(dt).contiguous()
    edges = torch.linspace(0.0, 1.0, s + 1, dtype=dt)  # the torch path's interval edges, to the bit
    u = None if u is None else u.detach().to(dt).contiguous()
    if u is not None and u.shape != (r, s):
        raise ValueError(f"sample_rays: u must be ({r}, {s}), got {tuple(u.shape)}")
    res = 0 if occupied is None else occupied.shape[0]
    occ = None if occupied is None else occupied.contiguous().view(torch.uint8)
    if occ is not None and occupied.shape != (res, res, res):
        raise ValueError(f"sample_rays: the occupancy grid must be cubic, got {tuple(occupied.shape)}")
    counts = torch.empty(r, dtype=torch.int64)
    masks = torch.empty(r, dtype=torch.int64) if s <= 64 else None  # each ray's kept samples, bit k: sample k
    args = (s, ptr(o), ptr(d), float(bound), ptr(edges), ptr(u), ptr(occ), res)
    if r:
        NATIVE.kernel("d3vc_sample_count", dt)(r, *args, ptr(counts), ptr(masks))
    offsets = torch.zeros(r + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=offsets[1:])
    m = int(offsets[-1])
    x, t0, t1, tm = torch.empty(m, 3, dtype=dt), torch.empty(m, dtype=dt), torch.empty(m, dtype=dt), \
        torch.empty(m, dtype=dt)
    ray_id = torch.empty(m, dtype=torch.int64)
    if m:
        NATIVE.kernel("d3vc_sample_fill", dt)(r, *args, ptr(offsets), ptr(masks), ptr(x), ptr(t0), ptr(t1), ptr(tm),
                                              ptr(ray_id))
    return RaySamples(x, t0, t1, tm, ray_id, offsets)


def applies(o: torch.Tensor, shading: str) -> bool:
    """The fused kernels render rays o (R, 3) with this shading: CPU float32 / float64, kernels built and enabled."""
    return (o.device.type == "cpu" and o.dtype in (torch.float32, torch.float64) and shading in SHADING_CODES
            and NATIVE.available())


class CompositeFunction(torch.autograd.Function):
    """``apply(sigma, albedo, normals, light, offsets, t_starts, t_ends, t_mid, shading, ambient)`` over M packed
    samples of R rays: sigma (M,), albedo (M, 3), normals (M, 3) or None, light (R, 3) or None (towards the light,
    per ray; needed unless ``shading`` is "albedo"), offsets (R + 1,) int64, the sample intervals and evaluation
    points (M,) -> weights (M,), rgb (R, 3) (no background), opacity (R,), depth (R,) (sum w t, not normalised),
    normal (R, 3) (sum w n; None without normals). First-order differentiable w.r.t. sigma, albedo and normals."""

    @staticmethod
    def forward(ctx, sigma, albedo, normals, light, offsets, t_starts, t_ends, t_mid, shading: str, ambient: float):
        mode = SHADING_CODES[shading]
        if mode and (normals is None or light is None):
            raise ValueError(f"{shading!r} shading needs normals and a light direction")
        dt = sigma.dtype
        fn = NATIVE.kernel("d3vc_forward", dt)
        m, r = sigma.shape[0], offsets.shape[0] - 1
        sigma, albedo, t_starts, t_ends, t_mid = (t.detach().to(dt).contiguous()
                                                  for t in (sigma, albedo, t_starts, t_ends, t_mid))
        normals = None if normals is None else normals.detach().to(dt).contiguous()
        light = None if light is None else light.detach().to(dt).contiguous()
        offsets = offsets.to(torch.int64).contiguous()
        if albedo.shape != (m, 3) or (normals is not None and normals.shape != (m, 3)) or \
                (light is not None and light.shape != (r, 3)) or int(offsets[-1]) != m:
            raise ValueError("composite: shapes do not match (M samples, R + 1 offsets ending at M)")
        w, acc = torch.empty(m, dtype=dt), torch.empty(m, dtype=dt)
        rgb, opacity, depth = torch.empty(r, 3, dtype=dt), torch.empty(r, dtype=dt), torch.empty(r, dtype=dt)
        nrm = None if normals is None else torch.empty(r, 3, dtype=dt)
        if r:
            fn(r, ptr(offsets), mode, float(ambient), ptr(sigma), ptr(t_starts), ptr(t_ends), ptr(t_mid), ptr(albedo),
               ptr(normals), ptr(light), ptr(w), ptr(acc), ptr(rgb), ptr(opacity), ptr(depth), ptr(nrm))
        ctx.save_for_backward(sigma, albedo, normals, light, offsets, t_starts, t_ends, t_mid, w, acc)
        ctx.mode, ctx.ambient = mode, float(ambient)
        ctx.set_materialize_grads(False)
        return w, rgb, opacity, depth, nrm

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_w, g_rgb, g_op, g_depth, g_nrm):
        sigma, albedo, normals, light, offsets, t_starts, t_ends, t_mid, w, acc = ctx.saved_tensors
        need_sigma, need_alb, need_n = ctx.needs_input_grad[:3]
        dt, m, r = sigma.dtype, sigma.shape[0], offsets.shape[0] - 1
        g_w, g_rgb, g_op, g_depth, g_nrm = (None if g is None else g.to(dt).contiguous()
                                            for g in (g_w, g_rgb, g_op, g_depth, g_nrm))
        g_sigma = torch.empty(m, dtype=dt)
        g_alb = torch.empty(m, 3, dtype=dt) if need_alb and ctx.mode != 2 else None
        g_n = torch.empty(m, 3, dtype=dt) if need_n and normals is not None else None
        if r:
            fn = NATIVE.kernel("d3vc_backward", dt)
            fn(r, ptr(offsets), ctx.mode, ctx.ambient, ptr(sigma), ptr(t_starts), ptr(t_ends), ptr(t_mid),
               ptr(albedo), ptr(normals), ptr(light), ptr(w), ptr(acc), ptr(g_w), ptr(g_rgb), ptr(g_op),
               ptr(g_depth), ptr(g_nrm), ptr(g_sigma), ptr(g_alb), ptr(g_n))
        if need_alb and g_alb is None:
            g_alb = torch.zeros(m, 3, dtype=dt)  # textureless: the colour does not depend on the albedo
        return (g_sigma if need_sigma else None, g_alb, g_n, None, None, None, None, None, None, None)


class OrientationFunction(torch.autograd.Function):
    """``apply(normals, weights, dirs, offsets)`` -> (R,): DreamFusion's orientation term per ray (Sec. 3.1,
    R_orient), sum_i w_i max(0, n_i . d_r)^2 over ray r's packed samples (normals (M, 3), weights (M,), the rays'
    directions dirs (R, 3), offsets (R + 1,) int64). Differentiable w.r.t. the normals only: the weights are
    constants (stop-gradient) and so are the directions. One pass per ray, without the (M, 3) gather of each
    sample's direction and the half-dozen (M,) passes of the torch code (``optimize.losses.orientation_loss``)."""

    @staticmethod
    def forward(ctx, normals, weights, dirs, offsets):
        dt = normals.dtype
        normals = normals.detach().contiguous()
        weights, dirs = weights.detach().to(dt).contiguous(), dirs.detach().to(dt).contiguous()
        offsets = offsets.to(torch.int64).contiguous()
        r = offsets.shape[0] - 1
        if normals.shape != (weights.shape[0], 3) or dirs.shape != (r, 3) or int(offsets[-1]) != normals.shape[0]:
            raise ValueError("orientation: shapes do not match (M samples, R rays, R + 1 offsets ending at M)")
        out = torch.empty(r, dtype=dt)
        if r:
            NATIVE.kernel("d3vc_orient_forward", dt)(r, ptr(offsets), ptr(normals), ptr(weights), ptr(dirs), ptr(out))
        ctx.save_for_backward(normals, weights, dirs, offsets)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        normals, weights, dirs, offsets = ctx.saved_tensors
        g_n = torch.empty_like(normals)
        r = offsets.shape[0] - 1
        if r and ctx.needs_input_grad[0]:
            g = g.to(normals.dtype).contiguous()
            NATIVE.kernel("d3vc_orient_backward", normals.dtype)(r, ptr(offsets), ptr(normals), ptr(weights),
                                                                 ptr(dirs), ptr(g), ptr(g_n))
        return (g_n if ctx.needs_input_grad[0] else None), None, None, None

