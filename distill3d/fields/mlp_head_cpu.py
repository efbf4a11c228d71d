"""The fields' MLP head as one fused CPU kernel, in C++: a Linear-ReLU-Linear MLP on the hash-grid features and,
for normals, the spatial gradient of its output 0 (``jacobian.mlp_with_input_grad``), forward and backward, one
point at a time.

Why native code here: with the hash grid fused (``hashgrid_cpu``), the MLP was the next part of a distillation
step: torch computes it as two matmuls, a ReLU mask, the input-gradient matmul and the contraction with the
encoding's derivatives, each (and each backward) a pass over (N, 32) or (N, 3, 16) tensors in memory. No installed
library fuses a tiny MLP with its input gradient on CPU (tiny-cuda-nn's fully fused MLP is CUDA only). Here the
activations stay in registers and the backward recomputes the hidden layer: 40k samples of the default field
(16 features, 32 hidden, 4 outputs) forward + backward ~7 ms against ~15 ms in torch. Built with ``-march=native``
(``native_build``): its loops are written for the vector units (omp simd, branch-free masks); at the baseline
instruction set they were slower than torch's matmuls.

The same kernels can end with the fields' per-sample tail (``head.FieldTail``: the density activation and mask,
the albedo's sigmoid, the normals' normalisation; ``FieldHeadFunction``): a dozen torch ops over the samples and
their backwards (~3.5 ms of a red cube's 40k-sample query at step 600) become a few more instructions per point.

The weight gradients are summed per thread over fixed point chunks, then over threads in order: deterministic for a
given thread count. Built and loaded by ``native_build.NativeLibrary``; ``DISTILL3D_NATIVE=0`` forces the torch
code.
"""

from __future__ import annotations

import torch

from distill3d.native_build import NativeLibrary, ptr

_SOURCE = r"""
// distill3d field MLP head, fused CPU kernels (see distill3d/fields/mlp_head_cpu.py). No torch headers.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>
#include <omp.h>

namespace {

// The field's MLP head, fused: one hidden ReLU layer, z = W1 f + b1, h = W2 relu(z) + b2 (h: O outputs), and the
// input gradient of output 0 contracted with the encoding's spatial derivatives, c_k = sum_d jac[k, d] v_d with
// v = W1^T (W2[0] * 1[z > 0]) (fields/jacobian.py's mlp_with_input_grad, one point at a time: the (N, H)
// activations, masks and their gradients never go to memory). Loops run over the contiguous axis (w1t = W1^T for
// the sums over d) so they vectorise without reassociating sums.
constexpr int kMaxHead = 256;  // H and D bound of the per-point stack arrays (checked on the Python side)
constexpr int kMaxOut = 16;

// The fields' per-sample tail after the head (fields/head.py's FieldTail; its torch code is the reference):
// density = act(h_0 + bias) where mask > 0 (else 0), albedo = sigmoid(h_1 .. h_{o-1}), and with the Jacobian
// normals = sign * g / max(|g|, 1e-12), g = c * scale + bias_grad (c: the spatial gradient of h_0 in the
// encoding's units, scale its per-point world factor). These outputs replace h and c; the backward maps their
// gradients to h's and c's in the same pass. Null inputs: bias 0, bias_grad 0, scale 1, mask 1; null gradients 0.
template <typename T>
struct Tail {
  int act;  // 0: none (density = h_0 + bias: the SDF's signed distance), 1: softplus (beta 1, threshold 20), 2: exp
  T sign;
  const T* scale;      // (n,)
  const T* bias;       // (n,)
  const T* bias_grad;  // (n, 3)
  const T* mask;       // (n,)
  T* density;          // (n,) forward outputs
  T* albedo;           // (n, o - 1); the backward reads the forward's (sigmoid' = a (1 - a))
  T* normals;          // (n, 3)
  const T* g_density;  // backward inputs
  const T* g_albedo;
  const T* g_normals;
};

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <typename T>
inline T activate(int act, T x) {
  if (act == 1) return x > T(20) ? x : std::log1p(std::exp(x));  // torch's softplus
  if (act == 2) return std::exp(x);
  return x;
}

// d act / d x; trunc_exp's gradient is exp(min(x, 15)) (fields/head.py: Instant-NGP's stable density)
template <typename T>
inline T activate_grad(int act, T x) {
  if (act == 1) return x > T(20) ? T(1) : sigmoid(x);
  if (act == 2) return std::exp(x < T(15) ? x : T(15));
  return T(1);
}

// g = c * scale + bias_grad of point i, |g| and the normal's denominator max(|g|, 1e-12)
template <typename T>
inline void tail_gradient(const Tail<T>& t, int64_t i, const T c[3], T g[3], T& norm, T& den) {
  const T sc = t.scale ? t.scale[i] : T(1);
  for (int k = 0; k < 3; ++k) g[k] = c[k] * sc + (t.bias_grad ? t.bias_grad[i * 3 + k] : T(0));
  norm = std::sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2]);
  den = norm > T(1e-12) ? norm : T(1e-12);
}
// Branch free (a mask as a select, never a skipped row: a ReLU mask is a coin flip to the branch predictor) and
// `omp simd` on the inner loops, reductions included (OpenMP lets them reassociate; -fopenmp enables the pragma).

template <typename T>
inline __attribute__((always_inline)) void head_hidden(int d, int h, const T* fi, const T* w1t, const T* b1, T* z) {
#pragma omp simd
  for (int j = 0; j < h; ++j) z[j] = b1[j];
  for (int k = 0; k < d; ++k) {
    const T fk = fi[k];
    const T* wr = w1t + k * h;
#pragma omp simd
    for (int j = 0; j < h; ++j) z[j] += wr[j] * fk;
  }
}

// u_j = W2[0, j] where z_j > 0 else 0, v (d) = W1^T u: d output 0 / d features
template <typename T>
inline __attribute__((always_inline)) void head_input_grad(int d, int h, const T* z, const T* w1, const T* w2,
                                                            T* u, T* v) {
#pragma omp simd
  for (int j = 0; j < h; ++j) u[j] = z[j] > T(0) ? w2[j] : T(0);
#pragma omp simd
  for (int k = 0; k < d; ++k) v[k] = 0;
  for (int j = 0; j < h; ++j) {
    const T uj = u[j];
    const T* wr = w1 + j * d;
#pragma omp simd
    for (int k = 0; k < d; ++k) v[k] += uj * wr[k];
  }
}

template <typename T, int DC, int HC, int OC, bool TAIL>
void head_forward_impl(int64_t n, int d_, int h_, int o_, const T* f, const T* jac, const T* w1, const T* w1t,
                       const T* b1, const T* w2, const T* b2, T* out, T* outc, const Tail<T>* tail) {
  const int d = DC > 0 ? DC : d_, h = HC > 0 ? HC : h_, o = OC > 0 ? OC : o_;
#pragma omp parallel
  {
    alignas(64) T z[kMaxHead];
    alignas(64) T a[kMaxHead];
    alignas(64) T u[kMaxHead];
    alignas(64) T v[kMaxHead];
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      head_hidden<T>(d, h, f + i * d, w1t, b1, z);
#pragma omp simd
      for (int j = 0; j < h; ++j) a[j] = z[j] > T(0) ? z[j] : T(0);
      T hl[kMaxOut], cl[3];
      T* hi = TAIL ? hl : out + i * o;
      T* ci = TAIL ? cl : outc + i * 3;
      for (int q = 0; q < o; ++q) {
        const T* wr = w2 + q * h;
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < h; ++j) s += wr[j] * a[j];
        hi[q] = s + b2[q];
      }
      if (jac) {
        head_input_grad<T>(d, h, z, w1, w2, u, v);
        const T* ji = jac + i * 3 * d;
        for (int k3 = 0; k3 < 3; ++k3) {
          T s = 0;
#pragma omp simd reduction(+ : s)
          for (int k = 0; k < d; ++k) s += ji[k3 * d + k] * v[k];
          ci[k3] = s;
        }
      }
      if constexpr (TAIL) {
        const Tail<T>& t = *tail;
        const T raw = hl[0] + (t.bias ? t.bias[i] : T(0));
        t.density[i] = (!t.mask || t.mask[i] > T(0)) ? activate(t.act, raw) : T(0);
        for (int q = 1; q < o; ++q) t.albedo[i * (o - 1) + q - 1] = sigmoid(hl[q]);
        if (jac) {
          T g[3], norm, den;
          tail_gradient(t, i, cl, g, norm, den);
          for (int k = 0; k < 3; ++k) t.normals[i * 3 + k] = t.sign * g[k] / den;
        }
      }
    }
  }
}

// Gradients given gout (n, o) and gc (n, 3) (null: zero): gf (n, d), gjac (n, 3, d) (either may be null) and the
// weights' (written, not accumulated), summed per thread over static point chunks, then over threads in order.
// With TAIL, gout and gc are unused: the tail's output gradients are mapped to h's and c's per point (the hidden
// layer, h and c recomputed).
template <typename T, int DC, int HC, int OC, bool TAIL>
void head_backward_impl(int64_t n, int d_, int h_, int o_, const T* f, const T* jac, const T* w1, const T* w1t,
                        const T* b1, const T* w2, const T* b2, const T* gout, const T* gc, T* gf, T* gjac, T* gw1,
                        T* gb1, T* gw2, T* gb2, const Tail<T>* tail) {
  const int d = DC > 0 ? DC : d_, h = HC > 0 ? HC : h_, o = OC > 0 ? OC : o_;
  const int nt = omp_get_max_threads();
  const int64_t stride = int64_t(h) * d + h + int64_t(o) * h + o;
  std::vector<T> acc(std::size_t(nt * stride), T(0));
  const bool with_c = jac != nullptr && (TAIL ? tail->g_normals != nullptr : gc != nullptr);
#pragma omp parallel
  {
    T* A = acc.data() + omp_get_thread_num() * stride;
    T* aw1 = A;
    T* ab1 = aw1 + h * d;
    T* aw2 = ab1 + h;
    T* ab2 = aw2 + o * h;
    alignas(64) T z[kMaxHead];
    alignas(64) T a[kMaxHead];
    alignas(64) T u[kMaxHead];
    alignas(64) T v[kMaxHead];
    alignas(64) T gz[kMaxHead];
    alignas(64) T gu[kMaxHead];
    alignas(64) T gv[kMaxHead];
#pragma omp simd
    for (int j = 0; j < kMaxHead; ++j) u[j] = gv[j] = T(0);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T* fi = f + i * d;
      head_hidden<T>(d, h, fi, w1t, b1, z);
#pragma omp simd
      for (int j = 0; j < h; ++j) {
        a[j] = z[j] > T(0) ? z[j] : T(0);
        gz[j] = 0;
      }
      if (with_c) head_input_grad<T>(d, h, z, w1, w2, u, v);
      const T* gh = gout ? gout + i * o : nullptr;
      const T* gci = with_c && !TAIL ? gc + i * 3 : nullptr;
      T ghl[kMaxOut], gcl[3];
      if constexpr (TAIL) {
        const Tail<T>& t = *tail;
        T h0 = 0;  // output 0 only: the albedo's gradient reads the forward's albedo
#pragma omp simd reduction(+ : h0)
        for (int j = 0; j < h; ++j) h0 += w2[j] * a[j];
        const T raw = h0 + b2[0] + (t.bias ? t.bias[i] : T(0));
        const bool on = !t.mask || t.mask[i] > T(0);
        ghl[0] = (t.g_density && on) ? t.g_density[i] * activate_grad(t.act, raw) : T(0);
        for (int q = 1; q < o; ++q) {
          const T aq = t.albedo[i * (o - 1) + q - 1];
          ghl[q] = t.g_albedo ? t.g_albedo[i * (o - 1) + q - 1] * (aq * (T(1) - aq)) : T(0);
        }
        gh = ghl;
        if (with_c) {
          // n = sign g / den: dn/dg = sign (I - n^ n^T) / |g| where |g| > 1e-12, else sign I / 1e-12
          const T* ji = jac + i * 3 * d;
          T cl[3], g[3], norm, den;
          for (int k3 = 0; k3 < 3; ++k3) {
            T s = 0;
#pragma omp simd reduction(+ : s)
            for (int k = 0; k < d; ++k) s += ji[k3 * d + k] * v[k];
            cl[k3] = s;
          }
          tail_gradient(t, i, cl, g, norm, den);
          const T* gn = t.g_normals + i * 3;
          T proj = 0;
          if (norm > T(1e-12)) proj = (g[0] * gn[0] + g[1] * gn[1] + g[2] * gn[2]) / (norm * norm);
          const T sc = t.scale ? t.scale[i] : T(1);
          for (int k = 0; k < 3; ++k) gcl[k] = t.sign * (gn[k] - g[k] * proj) / den * sc;
          gci = gcl;
        }
      }
      for (int q = 0; q < o; ++q) {
        const T g = gh[q];
        ab2[q] += g;
        const T* wr = w2 + q * h;
        T* ar = aw2 + q * h;
#pragma omp simd
        for (int j = 0; j < h; ++j) {
          gz[j] += g * wr[j];
          ar[j] += g * a[j];
        }
      }
#pragma omp simd
      for (int j = 0; j < h; ++j) {
        gz[j] = z[j] > T(0) ? gz[j] : T(0);
        ab1[j] += gz[j];
      }
      if (with_c) {
        const T* ji = jac + i * 3 * d;
#pragma omp simd
        for (int k = 0; k < d; ++k) gv[k] = gci[0] * ji[k] + gci[1] * ji[d + k] + gci[2] * ji[2 * d + k];
        if (gjac) {
          T* gji = gjac + i * 3 * d;
          for (int k3 = 0; k3 < 3; ++k3)
#pragma omp simd
            for (int k = 0; k < d; ++k) gji[k3 * d + k] = gci[k3] * v[k];
        }
#pragma omp simd
        for (int j = 0; j < h; ++j) gu[j] = 0;
        for (int k = 0; k < d; ++k) {
          const T g = gv[k];
          const T* wr = w1t + k * h;
#pragma omp simd
          for (int j = 0; j < h; ++j) gu[j] += g * wr[j];
        }
#pragma omp simd
        for (int j = 0; j < h; ++j) aw2[j] += z[j] > T(0) ? gu[j] : T(0);  // u = W2[0] * mask
      } else if (gjac) {
        T* gji = gjac + i * 3 * d;
#pragma omp simd
        for (int k = 0; k < 3 * d; ++k) gji[k] = 0;
      }
      // u and gv stay 0 without the gradient path (zeroed once above, written only when with_c)
      for (int j = 0; j < h; ++j) {
        const T uj = u[j], gzj = gz[j];
        T* ar = aw1 + j * d;
#pragma omp simd
        for (int k = 0; k < d; ++k) ar[k] += uj * gv[k] + gzj * fi[k];
      }
      if (gf) {
        T* gfi = gf + i * d;
        alignas(64) T s[kMaxHead];
#pragma omp simd
        for (int k = 0; k < d; ++k) s[k] = 0;
        for (int j = 0; j < h; ++j) {
          const T g = gz[j];
          const T* wr = w1 + j * d;
#pragma omp simd
          for (int k = 0; k < d; ++k) s[k] += g * wr[k];
        }
#pragma omp simd
        for (int k = 0; k < d; ++k) gfi[k] = s[k];
      }
    }
  }
  // thread sums in thread order: the same thread count gives the same bits
  for (int64_t e = 0; e < stride; ++e) {
    T s = 0;
    for (int t = 0; t < nt; ++t) s += acc[t * stride + e];
    T* dst = e < int64_t(h) * d ? gw1 + e
             : e < int64_t(h) * d + h ? gb1 + (e - int64_t(h) * d)
             : e < int64_t(h) * d + h + int64_t(o) * h ? gw2 + (e - int64_t(h) * d - h)
             : gb2 + (e - int64_t(h) * d - h - int64_t(o) * h);
    *dst = s;
  }
}

// The default fields' heads in float32 (RadianceField: 16 features, SDFField: 12; both 32 hidden, 4 outputs) get
// sizes known at compile time (loops unrolled into whole vectors: 2x faster than the generic kernel, which
// measured no faster than torch at 12 features); any other size or float64 (the tests) the generic kernel.
template <typename T, bool TAIL>
void head_forward_dispatch(int64_t n, int d, int h, int o, const T* f, const T* jac, const T* w1, const T* w1t,
                           const T* b1, const T* w2, const T* b2, T* out, T* outc,
                           const Tail<T>* tail) {
  if constexpr (std::is_same_v<T, float>) {
    if (d == 16 && h == 32 && o == 4)
      return head_forward_impl<T, 16, 32, 4, TAIL>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, out, outc, tail);
    if (d == 12 && h == 32 && o == 4)
      return head_forward_impl<T, 12, 32, 4, TAIL>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, out, outc, tail);
  }
  head_forward_impl<T, 0, 0, 0, TAIL>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, out, outc, tail);
}

template <typename T, bool TAIL>
void head_backward_dispatch(int64_t n, int d, int h, int o, const T* f, const T* jac, const T* w1, const T* w1t,
                            const T* b1, const T* w2, const T* b2, const T* gout, const T* gc, T* gf, T* gjac,
                            T* gw1, T* gb1, T* gw2, T* gb2, const Tail<T>* tail) {
  if constexpr (std::is_same_v<T, float>) {
    if (d == 16 && h == 32 && o == 4)
      return head_backward_impl<T, 16, 32, 4, TAIL>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, gout, gc, gf, gjac,
                                                    gw1, gb1, gw2, gb2, tail);
    if (d == 12 && h == 32 && o == 4)
      return head_backward_impl<T, 12, 32, 4, TAIL>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, gout, gc, gf, gjac,
                                                    gw1, gb1, gw2, gb2, tail);
  }
  head_backward_impl<T, 0, 0, 0, TAIL>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, gout, gc, gf, gjac, gw1, gb1, gw2,
                                       gb2, tail);
}

}  // namespace

extern "C" {

int d3mh_version() { return 3; }

// d3mh_forward / d3mh_backward: the head alone (h and c); d3mh_field_forward / d3mh_field_backward: the head with
// the fields' tail (density, albedo, normals). 0 on success, -1 on an exception (the backward's accumulators are
// the only allocation).
#define D3MH_DEFINE(SUFFIX, T)                                                                                 \
  void d3mh_forward_##SUFFIX(int64_t n, int d, int h, int o, const T* f, const T* jac, const T* w1,            \
                             const T* w1t, const T* b1, const T* w2, const T* b2, T* out,                     \
                             T* outc) {                                                                      \
    head_forward_dispatch<T, false>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, out, outc, nullptr);             \
  }                                                                                                          \
  int d3mh_backward_##SUFFIX(int64_t n, int d, int h, int o, const T* f, const T* jac, const T* w1,            \
                             const T* w1t, const T* b1, const T* w2, const T* b2, const T* gout, const T* gc, \
                             T* gf, T* gjac, T* gw1, T* gb1, T* gw2, T* gb2) {                               \
    try {                                                                                                    \
      head_backward_dispatch<T, false>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, gout, gc, gf, gjac, gw1, gb1, \
                                       gw2, gb2, nullptr);                                                   \
      return 0;                                                                                              \
    } catch (...) {                                                                                          \
      return -1;                                                                                             \
    }                                                                                                        \
  }                                                                                                          \
  void d3mh_field_forward_##SUFFIX(int64_t n, int d, int h, int o, int act, double sign, const T* f,           \
                                   const T* jac, const T* w1, const T* w1t, const T* b1, const T* w2,         \
                                   const T* b2, const T* scale, const T* bias,                               \
                                   const T* bias_grad, const T* mask, T* density, T* albedo, T* normals) {   \
    const Tail<T> t{act, T(sign), scale, bias, bias_grad, mask, density, albedo, normals,                    \
                    nullptr, nullptr, nullptr};                                                              \
    head_forward_dispatch<T, true>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, nullptr, nullptr, &t);            \
  }                                                                                                          \
  int d3mh_field_backward_##SUFFIX(int64_t n, int d, int h, int o, int act, double sign, const T* f,           \
                                   const T* jac, const T* w1, const T* w1t, const T* b1, const T* w2,         \
                                   const T* b2, const T* scale, const T* bias, const T* bias_grad,           \
                                   const T* mask, const T* albedo, const T* g_density, const T* g_albedo,   \
                                   const T* g_normals, T* gf, T* gjac, T* gw1, T* gb1, T* gw2, T* gb2) {     \
    const Tail<T> t{act, T(sign), scale, bias, bias_grad, mask, nullptr, const_cast<T*>(albedo), nullptr,    \
                    g_density, g_albedo, g_normals};                                                         \
    try {                                                                                                    \
      head_backward_dispatch<T, true>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, nullptr, nullptr, gf, gjac,    \
                                      gw1, gb1, gw2, gb2, &t);                                               \
      return 0;                                                                                              \
    } catch (...) {                                                                                          \
      return -1;                                                                                             \
    }                                                                                                        \
  }

D3MH_DEFINE(f32, float)
D3MH_DEFINE(f64, double)

}  // extern "C"
"""


NATIVE = NativeLibrary("distill3d_mlp_head", _SOURCE, "MLP-head kernels", version=("d3mh_version", 3),
                       kernels={"d3mh_forward": ("liii" + "p" * 9, None), "d3mh_backward": ("liii" + "p" * 15, "i"),
                                "d3mh_field_forward": ("liiiid" + "p" * 14, None),
                                "d3mh_field_backward": ("liiiid" + "p" * 21, "i")})


def available() -> bool:
    """True when the native kernel is enabled (``DISTILL3D_NATIVE``) and built."""
    return NATIVE.available()


MAX_HEAD_WIDTH = 256  # kMaxHead: the widest hidden layer / feature vector the fused head takes
MAX_HEAD_OUTPUTS = 16  # kMaxOut


def head_fits(d: int, h: int, o: int) -> bool:
    """The fused MLP head's size limits (its per-point arrays live on the stack)."""
    return 0 < d <= MAX_HEAD_WIDTH and 0 < h <= MAX_HEAD_WIDTH and 0 < o <= MAX_HEAD_OUTPUTS


def _prepared(feats: torch.Tensor, jac: torch.Tensor | None, w1, b1, w2, b2, what: str) -> tuple:
    """A head forward's inputs for the kernels: feats and jac contiguous, the weights detached in feats' dtype,
    W1^T; shapes checked (ValueError naming ``what``). Returns (feats, jac, w1, w1t, b1, w2, b2)."""
    dt = feats.dtype
    feats = feats.contiguous()
    jac = None if jac is None else jac.to(dt).contiguous()
    w1, b1, w2, b2 = (t.detach().to(dt).contiguous() for t in (w1, b1, w2, b2))
    n, d = feats.shape
    h, o = w1.shape[0], w2.shape[0]
    if w1.shape != (h, d) or b1.shape != (h,) or w2.shape != (o, h) or b2.shape != (o,) or not head_fits(d, h, o):
        raise ValueError(f"{what}: unsupported shapes feats {tuple(feats.shape)}, W1 {tuple(w1.shape)}, "
                         f"W2 {tuple(w2.shape)}")
    if jac is not None and jac.shape != (n, 3, d):
        raise ValueError(f"{what}: jac {tuple(jac.shape)} does not match feats {tuple(feats.shape)}")
    return feats, jac, w1, w1.T.contiguous(), b1, w2, b2


def _grad_buffers(n: int, d: int, h: int, o: int, dt: torch.dtype, need: tuple[bool, ...], with_jac: bool
                  ) -> tuple[torch.Tensor | None, ...]:
    """A head backward's outputs: gf (n, d) and gjac (n, 3, d) where needed (the kernel writes them), the weights'
    gradients W1, b1, W2, b2 (zeroed)."""
    gf = torch.empty(n, d, dtype=dt) if need[0] else None
    gjac = torch.empty(n, 3, d, dtype=dt) if (with_jac and need[1]) else None
    return (gf, gjac, torch.zeros(h, d, dtype=dt), torch.zeros(h, dtype=dt), torch.zeros(o, h, dtype=dt),
            torch.zeros(o, dtype=dt))


def _returned(n: int, bufs: tuple, need: tuple[bool, ...]) -> tuple:
    """The gradients of (feats, jac, W1, b1, W2, b2) a backward returns (no points: gjac zero)."""
    if not n and bufs[1] is not None:
        bufs[1].zero_()
    return tuple(b if need[k] else None for k, b in enumerate(bufs))


class MLPHeadFunction(torch.autograd.Function):
    """``apply(feats, jac, w1, b1, w2, b2)``: a Linear-ReLU-Linear MLP on feats (N, D), h = W2 relu(W1 f + b1) + b2
    (N, O), and with jac (N, 3, D) (else None) also c (N, 3) = jac . (d h_0 / d feats), the spatial gradient of
    output 0 in the encoding's units; returns h, or (h, c). One fused pass per point forward and backward
    (torch's two matmuls, the ReLU's mask, the input-gradient matmul and the contraction, with their backwards,
    took 15.2 ms against 7.3 for the 39,690 samples of a view of a red cube at step 600). First-order
    differentiable w.r.t. everything but the shapes; the backward recomputes the hidden layer instead of storing
    it."""

    @staticmethod
    def forward(ctx, feats, jac, w1, b1, w2, b2):
        dt = feats.dtype
        fn = NATIVE.kernel("d3mh_forward", dt)
        feats, jac, w1, w1t, b1, w2, b2 = _prepared(feats, jac, w1, b1, w2, b2, "MLP head")
        (n, d), h, o = feats.shape, w1.shape[0], w2.shape[0]
        out = torch.empty(n, o, dtype=dt)
        outc = torch.empty(n, 3, dtype=dt) if jac is not None else None
        if n:
            fn(n, d, h, o, ptr(feats), ptr(jac), ptr(w1), ptr(w1t), ptr(b1), ptr(w2), ptr(b2), ptr(out), ptr(outc))
        ctx.save_for_backward(feats, jac, w1, w1t, b1, w2, b2)
        ctx.set_materialize_grads(False)
        return out if jac is None else (out, outc)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out, g_c=None):
        feats, jac, w1, w1t, b1, w2, b2 = ctx.saved_tensors
        need = ctx.needs_input_grad
        n, d = feats.shape
        h, o = w1.shape[0], w2.shape[0]
        dt = feats.dtype
        g_out = torch.zeros(n, o, dtype=dt) if g_out is None else g_out.to(dt).contiguous()
        g_c = None if (g_c is None or jac is None) else g_c.to(dt).contiguous()
        gf, gjac, gw1, gb1, gw2, gb2 = bufs = _grad_buffers(n, d, h, o, dt, need, jac is not None)
        if n:
            fn = NATIVE.kernel("d3mh_backward", dt)
            if fn(n, d, h, o, ptr(feats), ptr(jac), ptr(w1), ptr(w1t), ptr(b1), ptr(w2), ptr(b2),
                  ptr(g_out), ptr(g_c), ptr(gf), ptr(gjac), ptr(gw1), ptr(gb1), ptr(gw2), ptr(gb2)):
                raise RuntimeError("native MLP head backward failed")
        return _returned(n, bufs, need)


ACTIVATIONS = {"none": 0, "softplus": 1, "trunc_exp": 2}  # the kernel's codes of head.FieldTail's activations


class FieldHeadFunction(torch.autograd.Function):
    """``apply(feats, jac, w1, b1, w2, b2, scale, bias, bias_grad, mask, activation, sign)``: the fused head with the
    fields' per-sample tail (``head.FieldTail``, whose torch code is the reference): density (N,) =
    act(h_0 + bias) where mask > 0, albedo (N, O - 1) = sigmoid(h_1:), and with jac (N, 3, D) (else None) normals
    (N, 3) = sign * g / max(|g|, 1e-12), g = scale * (jac . d h_0 / d feats) + bias_grad. Returns (density,
    albedo) or (density, albedo, normals). ``scale`` (N,), ``bias`` (N,), ``bias_grad`` (N, 3), ``mask`` (N,) are
    constants (None: 1, 0, 0, 1); first-order differentiable w.r.t. feats, jac and the weights. One pass per point
    each way: the tail's dozen torch ops (the activation, the mask, the sigmoid, the normals' norm, clamp and
    division, the slices of h) and their backwards were ~3.5 ms of a red cube's ~40k-sample query at step 600."""

    @staticmethod
    def forward(ctx, feats, jac, w1, b1, w2, b2, scale, bias, bias_grad, mask, activation: str, sign: float):
        dt = feats.dtype
        feats, jac, w1, w1t, b1, w2, b2 = _prepared(feats, jac, w1, b1, w2, b2, "field head")
        (n, d), h, o = feats.shape, w1.shape[0], w2.shape[0]
        consts = [None if t is None else t.detach().to(dt).contiguous() for t in (scale, bias, bias_grad, mask)]
        if o < 2 or any(t is not None and t.shape != sh for t, sh in zip(consts, [(n,), (n,), (n, 3), (n,)])):
            raise ValueError("field head: needs 2+ outputs; scale / bias / bias_grad / mask must match feats")
        density, albedo = torch.empty(n, dtype=dt), torch.empty(n, o - 1, dtype=dt)
        normals = torch.empty(n, 3, dtype=dt) if jac is not None else None
        code = ACTIVATIONS[activation]
        if n:
            NATIVE.kernel("d3mh_field_forward", dt)(
                n, d, h, o, code, float(sign), ptr(feats), ptr(jac), ptr(w1), ptr(w1t), ptr(b1), ptr(w2), ptr(b2),
                *map(ptr, consts), ptr(density), ptr(albedo), ptr(normals))
        ctx.save_for_backward(feats, jac, w1, w1t, b1, w2, b2, albedo, *consts)
        ctx.code, ctx.sign = code, float(sign)
        ctx.set_materialize_grads(False)
        return (density, albedo) if jac is None else (density, albedo, normals)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_density, g_albedo, g_normals=None):
        feats, jac, w1, w1t, b1, w2, b2, albedo, *consts = ctx.saved_tensors
        need = ctx.needs_input_grad
        n, d = feats.shape
        h, o = w1.shape[0], w2.shape[0]
        dt = feats.dtype
        grads = [None if g is None else g.to(dt).contiguous() for g in (g_density, g_albedo, g_normals)]
        if jac is None:
            grads[2] = None
        gf, gjac, gw1, gb1, gw2, gb2 = bufs = _grad_buffers(n, d, h, o, dt, need, jac is not None)
        if n:
            fn = NATIVE.kernel("d3mh_field_backward", dt)
            if fn(n, d, h, o, ctx.code, ctx.sign, ptr(feats), ptr(jac), ptr(w1), ptr(w1t), ptr(b1), ptr(w2),
                  ptr(b2), *map(ptr, consts), ptr(albedo), *map(ptr, grads), ptr(gf), ptr(gjac), ptr(gw1),
                  ptr(gb1), ptr(gw2), ptr(gb2)):
                raise RuntimeError("native field head backward failed")
        return _returned(n, bufs, need) + (None,) * 6
