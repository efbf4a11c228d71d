"""The fields' MLP head as one fused CPU kernel, in C++: a Linear-ReLU-Linear MLP on the hash-grid features and,
for normals, the spatial gradient of its output 0 (``jacobian.mlp_with_input_grad``), forward and backward, a
few points at a time.

Why native code here: with the hash grid fused (``hashgrid_cpu``), the MLP was the next part of a distillation
step: torch computes it as two matmuls, a ReLU mask, the input-gradient matmul and the contraction with the
encoding's derivatives, each (and each backward) a pass over (N, 32) or (N, 3, 16) tensors in memory. No installed
library fuses a tiny MLP with its input gradient on CPU (tiny-cuda-nn's fully fused MLP is CUDA only). Here the
activations stay in registers and the backward recomputes the hidden layer: 40k samples of the default field
(16 features, 32 hidden, 4 outputs) forward + backward ~7 ms against ~15 ms in torch one point at a time, and with
the tail 1.7 + 3.1 ms four points at a time (2.3 + 5.3 one at a time: ``forward_points``). Built with ``-march=native``
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

from distill3d.fields import hashgrid_cpu
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
#ifndef D3MH_BLOCK
#define D3MH_BLOCK 4
#endif
constexpr int kBlock = D3MH_BLOCK;  // points per block of the default heads (see forward_points)

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

// Points go through the kernels P at a time (P = 4 for the default heads, 1 otherwise): the loops over a point's
// hidden units or features are single dependency chains (z += W1^T f over d, v += W1^T u over h, ...), which left
// the FMA units waiting on their latency; P points interleaved are P independent chains, and the weight gradients'
// accumulators are loaded and stored once per P points instead of once per point. Each point's own sums keep their
// order, so P changes nothing but the weight gradients' summation order.

// out (P, n_out) = bias + src M for P rows src(p, 0 .. n_in - 1) and M (n_in, n_out) row-major (bias null: 0): the
// kernels' four matrix products (z = W1 f + b1 with M = W1^T, v = W1^T u and the features' gradient with M = W1,
// W1 gv with M = W1^T), accumulated over i in order for each point. NI, NO: n_in and n_out when known at compile
// time (0: the arguments), as the loops over them must be to unroll. src is an accessor, not a pointer with a row
// stride: pointer arithmetic across the arrays of one struct kept the compiler from telling src and out apart.
template <typename T, int P, int OA, int NI, int NO, typename Src>
inline __attribute__((always_inline)) void rows_times(Src src, int n_in_, int n_out_, const T* m, const T* bias,
                                                      T (*out)[OA]) {
  const int n_in = NI > 0 ? NI : n_in_, n_out = NO > 0 ? NO : n_out_;
  for (int p = 0; p < P; ++p)
#pragma omp simd
    for (int o = 0; o < n_out; ++o) out[p][o] = bias ? bias[o] : T(0);
  for (int i = 0; i < n_in; ++i) {
    const T* mr = m + i * n_out;
    for (int p = 0; p < P; ++p) {
      const T si = src(p, i);
#pragma omp simd
      for (int o = 0; o < n_out; ++o) out[p][o] += mr[o] * si;
    }
  }
}

// the hidden layer of the P points from i0: z (P, h) = W1 f + b1, a = relu(z)
template <typename T, int P, int HA, int DC, int HC>
inline __attribute__((always_inline)) void hidden_points(int64_t i0, int d, int h, const T* f, const T* w1t,
                                                         const T* b1, T (*z)[HA], T (*a)[HA]) {
  rows_times<T, P, HA, DC, HC>([&](int p, int k) { return f[(i0 + p) * d + k]; }, d, h, w1t, b1, z);
  for (int p = 0; p < P; ++p)
#pragma omp simd
    for (int j = 0; j < h; ++j) a[p][j] = z[p][j] > T(0) ? z[p][j] : T(0);
}

// u (P, h) = W2[0, j] where z_j > 0 else 0, v (P, d) = W1^T u: d output 0 / d features
template <typename T, int P, int HA, int DA, int DC, int HC>
inline __attribute__((always_inline)) void input_grad_points(int d, int h, const T (*z)[HA], const T* w1,
                                                             const T* w2, T (*u)[HA], T (*v)[DA]) {
  for (int p = 0; p < P; ++p)
#pragma omp simd
    for (int j = 0; j < h; ++j) u[p][j] = z[p][j] > T(0) ? w2[j] : T(0);
  rows_times<T, P, DA, HC, DC>([&](int p, int j) { return u[p][j]; }, h, d, w1, nullptr, v);
}

template <typename T, int DC, int HC, int OC, bool TAIL, int P>
inline __attribute__((always_inline)) void forward_points(int64_t i0, int d_, int h_, int o_, const T* f,
                                                          const T* jac, const T* w1, const T* w1t, const T* b1,
                                                          const T* w2, const T* b2, T* out, T* outc,
                                                          const Tail<T>* tail) {
  constexpr int HA = HC > 0 ? HC : kMaxHead, DA = DC > 0 ? DC : kMaxHead;
  const int d = DC > 0 ? DC : d_, h = HC > 0 ? HC : h_, o = OC > 0 ? OC : o_;
  alignas(64) T z[P][HA], a[P][HA], u[P][HA];
  alignas(64) T v[P][DA];
  T hl[P][kMaxOut], cl[P][3];
  hidden_points<T, P, HA, DC, HC>(i0, d, h, f, w1t, b1, z, a);
  for (int p = 0; p < P; ++p) {
    T* hi = TAIL ? hl[p] : out + (i0 + p) * o;
    for (int q = 0; q < o; ++q) {
      const T* wr = w2 + q * h;
      T s = 0;
#pragma omp simd reduction(+ : s)
      for (int j = 0; j < h; ++j) s += wr[j] * a[p][j];
      hi[q] = s + b2[q];
    }
  }
  if (jac) {
    input_grad_points<T, P, HA, DA, DC, HC>(d, h, z, w1, w2, u, v);
    for (int p = 0; p < P; ++p) {
      const T* ji = jac + (i0 + p) * 3 * d;
      T* ci = TAIL ? cl[p] : outc + (i0 + p) * 3;
      for (int k3 = 0; k3 < 3; ++k3) {
        T s = 0;
#pragma omp simd reduction(+ : s)
        for (int k = 0; k < d; ++k) s += ji[k3 * d + k] * v[p][k];
        ci[k3] = s;
      }
    }
  }
  if constexpr (TAIL) {
    const Tail<T>& t = *tail;
    for (int p = 0; p < P; ++p) {
      const int64_t i = i0 + p;
      const T raw = hl[p][0] + (t.bias ? t.bias[i] : T(0));
      t.density[i] = (!t.mask || t.mask[i] > T(0)) ? activate(t.act, raw) : T(0);
      for (int q = 1; q < o; ++q) t.albedo[i * (o - 1) + q - 1] = sigmoid(hl[p][q]);
      if (jac) {
        T g[3], norm, den;
        tail_gradient(t, i, cl[p], g, norm, den);
        for (int k = 0; k < 3; ++k) t.normals[i * 3 + k] = t.sign * g[k] / den;
      }
    }
  }
}

template <typename T, int DC, int HC, int OC, bool TAIL, int P>
void head_forward_impl(int64_t n, int d, int h, int o, const T* f, const T* jac, const T* w1, const T* w1t,
                       const T* b1, const T* w2, const T* b2, T* out, T* outc, const Tail<T>* tail) {
  const int64_t blocks = n / P;
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b)
      forward_points<T, DC, HC, OC, TAIL, P>(b * P, d, h, o, f, jac, w1, w1t, b1, w2, b2, out, outc, tail);
#pragma omp for schedule(static)
    for (int64_t i = blocks * P; i < n; ++i)
      forward_points<T, DC, HC, OC, TAIL, 1>(i, d, h, o, f, jac, w1, w1t, b1, w2, b2, out, outc, tail);
  }
}

// Gradients of P points from i0 given gout (n, o) and gc (n, 3) (null: zero) into gf (n, d), gjac (n, 3, d) (either
// may be null) and the thread's weight-gradient accumulators. With TAIL, gout and gc are unused: the tail's output
// gradients are mapped to h's and c's per point (the hidden layer, h_0 and c recomputed).
template <typename T, int DC, int HC, int OC, bool TAIL, int P>
inline __attribute__((always_inline)) void backward_points(
    int64_t i0, int d_, int h_, int o_, bool with_c, const T* f, const T* jac, const T* w1, const T* w1t,
    const T* b1, const T* w2, const T* b2, const T* gout, const T* gc, T* gf, T* gjac, T* gco, T* gvo, T* aw1,
    T* ab1, T* aw2, T* ab2, const Tail<T>* tail) {
  constexpr int HA = HC > 0 ? HC : kMaxHead, DA = DC > 0 ? DC : kMaxHead;
  const int d = DC > 0 ? DC : d_, h = HC > 0 ? HC : h_, o = OC > 0 ? OC : o_;
  alignas(64) T z[P][HA], a[P][HA], u[P][HA];
  alignas(64) T v[P][DA];
  alignas(64) T gz[P][HA];
  alignas(64) T gu[P][HA];
  alignas(64) T gv[P][DA];
  T gh[P][kMaxOut], gcp[P][3];
  hidden_points<T, P, HA, DC, HC>(i0, d, h, f, w1t, b1, z, a);
  for (int p = 0; p < P; ++p)
#pragma omp simd
    for (int j = 0; j < h; ++j) gz[p][j] = 0;
  if (with_c) input_grad_points<T, P, HA, DA, DC, HC>(d, h, z, w1, w2, u, v);
  for (int p = 0; p < P; ++p) {
    const int64_t i = i0 + p;
    if constexpr (TAIL) {
      const Tail<T>& t = *tail;
      T h0 = 0;  // output 0 only: the albedo's gradient reads the forward's albedo
#pragma omp simd reduction(+ : h0)
      for (int j = 0; j < h; ++j) h0 += w2[j] * a[p][j];
      const T raw = h0 + b2[0] + (t.bias ? t.bias[i] : T(0));
      const bool on = !t.mask || t.mask[i] > T(0);
      gh[p][0] = (t.g_density && on) ? t.g_density[i] * activate_grad(t.act, raw) : T(0);
      for (int q = 1; q < o; ++q) {
        const T aq = t.albedo[i * (o - 1) + q - 1];
        gh[p][q] = t.g_albedo ? t.g_albedo[i * (o - 1) + q - 1] * (aq * (T(1) - aq)) : T(0);
      }
      if (with_c) {
        // n = sign g / den: dn/dg = sign (I - n^ n^T) / |g| where |g| > 1e-12, else sign I / 1e-12
        const T* ji = jac + i * 3 * d;
        T cl[3], g[3], norm, den;
        for (int k3 = 0; k3 < 3; ++k3) {
          T s = 0;
#pragma omp simd reduction(+ : s)
          for (int k = 0; k < d; ++k) s += ji[k3 * d + k] * v[p][k];
          cl[k3] = s;
        }
        tail_gradient(t, i, cl, g, norm, den);
        const T* gn = t.g_normals + i * 3;
        T proj = 0;
        if (norm > T(1e-12)) proj = (g[0] * gn[0] + g[1] * gn[1] + g[2] * gn[2]) / (norm * norm);
        const T sc = t.scale ? t.scale[i] : T(1);
        for (int k = 0; k < 3; ++k) gcp[p][k] = t.sign * (gn[k] - g[k] * proj) / den * sc;
      }
    } else {
      for (int q = 0; q < o; ++q) gh[p][q] = gout[i * o + q];
      if (with_c)
        for (int k = 0; k < 3; ++k) gcp[p][k] = gc[i * 3 + k];
    }
  }
  for (int q = 0; q < o; ++q) {
    const T* wr = w2 + q * h;
    T* ar = aw2 + q * h;
    T sb = 0;
    for (int p = 0; p < P; ++p) sb += gh[p][q];
    ab2[q] += sb;
#pragma omp simd
    for (int j = 0; j < h; ++j) {
      T s = ar[j];
      for (int p = 0; p < P; ++p) s += gh[p][q] * a[p][j];
      ar[j] = s;
    }
    for (int p = 0; p < P; ++p) {
      const T g = gh[p][q];
#pragma omp simd
      for (int j = 0; j < h; ++j) gz[p][j] += g * wr[j];
    }
  }
  for (int p = 0; p < P; ++p)
#pragma omp simd
    for (int j = 0; j < h; ++j) gz[p][j] = z[p][j] > T(0) ? gz[p][j] : T(0);
#pragma omp simd
  for (int j = 0; j < h; ++j) {
    T s = ab1[j];
    for (int p = 0; p < P; ++p) s += gz[p][j];
    ab1[j] = s;
  }
  if (with_c) {
    for (int p = 0; p < P; ++p) {
      const T* ji = jac + (i0 + p) * 3 * d;
      const T* gci = gcp[p];
#pragma omp simd
      for (int k = 0; k < d; ++k) gv[p][k] = gci[0] * ji[k] + gci[1] * ji[d + k] + gci[2] * ji[2 * d + k];
      if (gjac) {
        T* gji = gjac + (i0 + p) * 3 * d;
        for (int k3 = 0; k3 < 3; ++k3)
#pragma omp simd
          for (int k = 0; k < d; ++k) gji[k3 * d + k] = gci[k3] * v[p][k];
      }
      if (gco) {  // gjac's two factors: gjac = gc (x) v
        for (int k3 = 0; k3 < 3; ++k3) gco[(i0 + p) * 3 + k3] = gci[k3];
#pragma omp simd
        for (int k = 0; k < d; ++k) gvo[(i0 + p) * d + k] = v[p][k];
      }
    }
    rows_times<T, P, HA, DC, HC>([&](int p, int k) { return gv[p][k]; }, d, h, w1t, nullptr, gu);  // gu = W1 gv
#pragma omp simd
    for (int j = 0; j < h; ++j) {  // u = W2[0] * mask
      T s = aw2[j];
      for (int p = 0; p < P; ++p) s += z[p][j] > T(0) ? gu[p][j] : T(0);
      aw2[j] = s;
    }
    for (int j = 0; j < h; ++j) {
      T* ar = aw1 + j * d;
#pragma omp simd
      for (int k = 0; k < d; ++k) {
        T s = ar[k];
        for (int p = 0; p < P; ++p) s += u[p][j] * gv[p][k] + gz[p][j] * f[(i0 + p) * d + k];
        ar[k] = s;
      }
    }
  } else {
    if (gjac)
      for (int p = 0; p < P; ++p) {
        T* gji = gjac + (i0 + p) * 3 * d;
#pragma omp simd
        for (int k = 0; k < 3 * d; ++k) gji[k] = 0;
      }
    if (gco)
      for (int p = 0; p < P; ++p) {
        for (int k3 = 0; k3 < 3; ++k3) gco[(i0 + p) * 3 + k3] = 0;
#pragma omp simd
        for (int k = 0; k < d; ++k) gvo[(i0 + p) * d + k] = 0;
      }
    for (int j = 0; j < h; ++j) {
      T* ar = aw1 + j * d;
#pragma omp simd
      for (int k = 0; k < d; ++k) {
        T s = ar[k];
        for (int p = 0; p < P; ++p) s += gz[p][j] * f[(i0 + p) * d + k];
        ar[k] = s;
      }
    }
  }
  if (gf) {
    alignas(64) T s[P][DA];
    rows_times<T, P, DA, HC, DC>([&](int p, int j) { return gz[p][j]; }, h, d, w1, nullptr, s);  // W1^T gz
    for (int p = 0; p < P; ++p) {
      T* gfi = gf + (i0 + p) * d;
#pragma omp simd
      for (int k = 0; k < d; ++k) gfi[k] = s[p][k];
    }
  }
}

// The weights' gradients (written, not accumulated) are summed per thread over static blocks of points, then over
// threads in order: deterministic for a given thread count.
template <typename T, int DC, int HC, int OC, bool TAIL, int P>
void head_backward_impl(int64_t n, int d, int h, int o, const T* f, const T* jac, const T* w1, const T* w1t,
                        const T* b1, const T* w2, const T* b2, const T* gout, const T* gc, T* gf, T* gjac, T* gco,
                        T* gvo, T* gw1, T* gb1, T* gw2, T* gb2, const Tail<T>* tail) {
  const int nt = omp_get_max_threads();
  const int64_t stride = int64_t(h) * d + h + int64_t(o) * h + o;
  std::vector<T> acc(std::size_t(nt * stride), T(0));
  const bool with_c = jac != nullptr && (TAIL ? tail->g_normals != nullptr : gc != nullptr);
  const int64_t blocks = n / P;
#pragma omp parallel
  {
    T* A = acc.data() + omp_get_thread_num() * stride;
    T* aw1 = A;
    T* ab1 = aw1 + h * d;
    T* aw2 = ab1 + h;
    T* ab2 = aw2 + o * h;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b)
      backward_points<T, DC, HC, OC, TAIL, P>(b * P, d, h, o, with_c, f, jac, w1, w1t, b1, w2, b2, gout, gc, gf,
                                              gjac, gco, gvo, aw1, ab1, aw2, ab2, tail);
#pragma omp for schedule(static)
    for (int64_t i = blocks * P; i < n; ++i)
      backward_points<T, DC, HC, OC, TAIL, 1>(i, d, h, o, with_c, f, jac, w1, w1t, b1, w2, b2, gout, gc, gf, gjac,
                                              gco, gvo, aw1, ab1, aw2, ab2, tail);
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
      return head_forward_impl<T, 16, 32, 4, TAIL, kBlock>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, out, outc, tail);
    if (d == 12 && h == 32 && o == 4)
      return head_forward_impl<T, 12, 32, 4, TAIL, kBlock>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, out, outc, tail);
  }
  head_forward_impl<T, 0, 0, 0, TAIL, 1>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, out, outc, tail);
}

template <typename T, bool TAIL>
void head_backward_dispatch(int64_t n, int d, int h, int o, const T* f, const T* jac, const T* w1, const T* w1t,
                            const T* b1, const T* w2, const T* b2, const T* gout, const T* gc, T* gf, T* gjac,
                            T* gco, T* gvo, T* gw1, T* gb1, T* gw2, T* gb2, const Tail<T>* tail) {
  if constexpr (std::is_same_v<T, float>) {
    if (d == 16 && h == 32 && o == 4)
      return head_backward_impl<T, 16, 32, 4, TAIL, kBlock>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, gout, gc, gf,
                                                            gjac, gco, gvo, gw1, gb1, gw2, gb2, tail);
    if (d == 12 && h == 32 && o == 4)
      return head_backward_impl<T, 12, 32, 4, TAIL, kBlock>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, gout, gc, gf,
                                                            gjac, gco, gvo, gw1, gb1, gw2, gb2, tail);
  }
  head_backward_impl<T, 0, 0, 0, TAIL, 1>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, gout, gc, gf, gjac, gco, gvo, gw1,
                                          gb1, gw2, gb2, tail);
}

}  // namespace

extern "C" {

int d3mh_version() { return 4; }

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
      head_backward_dispatch<T, false>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, gout, gc, gf, gjac, nullptr,   \
                                       nullptr, gw1, gb1, gw2, gb2, nullptr);                                \
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
                                   const T* g_normals, T* gf, T* gjac, T* gco, T* gvo, T* gw1, T* gb1,       \
                                   T* gw2, T* gb2) {                                                         \
    const Tail<T> t{act, T(sign), scale, bias, bias_grad, mask, nullptr, const_cast<T*>(albedo), nullptr,    \
                    g_density, g_albedo, g_normals};                                                         \
    try {                                                                                                    \
      head_backward_dispatch<T, true>(n, d, h, o, f, jac, w1, w1t, b1, w2, b2, nullptr, nullptr, gf, gjac,    \
                                      gco, gvo, gw1, gb1, gw2, gb2, &t);                                     \
      return 0;                                                                                              \
    } catch (...) {                                                                                          \
      return -1;                                                                                             \
    }                                                                                                        \
  }

D3MH_DEFINE(f32, float)
D3MH_DEFINE(f64, double)

}  // extern "C"
"""


NATIVE = NativeLibrary("distill3d_mlp_head", _SOURCE, "MLP-head kernels", version=("d3mh_version", 4),
                       kernels={"d3mh_forward": ("liii" + "p" * 9, None), "d3mh_backward": ("liii" + "p" * 15, "i"),
                                "d3mh_field_forward": ("liiiid" + "p" * 14, None),
                                "d3mh_field_backward": ("liiiid" + "p" * 23, "i")})


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


def _field_forward(feats, jac, w1, b1, w2, b2, scale, bias, bias_grad, mask, activation: str, sign: float
                   ) -> tuple[tuple, list[torch.Tensor]]:
    """The field head kernel forward: (density, albedo[, normals]) and the tensors its backward reads."""
    dt = feats.dtype
    feats, jac, w1, w1t, b1, w2, b2 = _prepared(feats, jac, w1, b1, w2, b2, "field head")
    (n, d), h, o = feats.shape, w1.shape[0], w2.shape[0]
    consts = [None if t is None else t.detach().to(dt).contiguous() for t in (scale, bias, bias_grad, mask)]
    if o < 2 or any(t is not None and t.shape != sh for t, sh in zip(consts, [(n,), (n,), (n, 3), (n,)])):
        raise ValueError("field head: needs 2+ outputs; scale / bias / bias_grad / mask must match feats")
    density, albedo = torch.empty(n, dtype=dt), torch.empty(n, o - 1, dtype=dt)
    normals = torch.empty(n, 3, dtype=dt) if jac is not None else None
    if n:
        NATIVE.kernel("d3mh_field_forward", dt)(
            n, d, h, o, ACTIVATIONS[activation], float(sign), ptr(feats), ptr(jac), ptr(w1), ptr(w1t), ptr(b1),
            ptr(w2), ptr(b2), *map(ptr, consts), ptr(density), ptr(albedo), ptr(normals))
    out = (density, albedo) if jac is None else (density, albedo, normals)
    return out, [feats, jac, w1, w1t, b1, w2, b2, albedo, *consts]


def _field_backward(saved: list, activation: str, sign: float, grads: tuple, need: tuple[bool, ...],
                    factorised: bool) -> tuple:
    """The field head kernel backward from ``_field_forward``'s tensors and the outputs' gradients: the gradients
    of (feats, jac, W1, b1, W2, b2) where ``need``; with ``factorised`` jac's as its two factors (gc (N, 3), v (N,
    D): d loss / d jac = gc (x) v, the grid's backward reads them without the (N, 3, D) tensor) or None."""
    feats, jac, w1, w1t, b1, w2, b2, albedo, *consts = saved
    n, d = feats.shape
    h, o = w1.shape[0], w2.shape[0]
    dt = feats.dtype
    grads = [None if g is None else g.to(dt).contiguous() for g in grads]
    if jac is None:
        grads[2] = None
    factors = factorised and jac is not None and grads[2] is not None and need[1]
    gf, gjac, gw1, gb1, gw2, gb2 = bufs = _grad_buffers(n, d, h, o, dt, (need[0], need[1] and not factors) + need[2:],
                                                         jac is not None)
    gc, gv = (torch.empty(n, 3, dtype=dt), torch.empty(n, d, dtype=dt)) if factors else (None, None)
    if n:
        fn = NATIVE.kernel("d3mh_field_backward", dt)
        if fn(n, d, h, o, ACTIVATIONS[activation], float(sign), ptr(feats), ptr(jac), ptr(w1), ptr(w1t), ptr(b1),
              ptr(w2), ptr(b2), *map(ptr, consts), ptr(albedo), *map(ptr, grads), ptr(gf), ptr(gjac), ptr(gc),
              ptr(gv), ptr(gw1), ptr(gb1), ptr(gw2), ptr(gb2)):
            raise RuntimeError("native field head backward failed")
    out = _returned(n, bufs, need)
    return out[:1] + ((gc, gv) if factors else out[1],) + out[2:]


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
        out, saved = _field_forward(feats, jac, w1, b1, w2, b2, scale, bias, bias_grad, mask, activation, sign)
        ctx.save_for_backward(*saved)
        ctx.activation, ctx.sign = activation, float(sign)
        ctx.set_materialize_grads(False)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_density, g_albedo, g_normals=None):
        grads = _field_backward(list(ctx.saved_tensors), ctx.activation, ctx.sign, (g_density, g_albedo, g_normals),
                                ctx.needs_input_grad[:6], factorised=False)
        return grads + (None,) * 6


class EncodedFieldHeadFunction(torch.autograd.Function):
    """``apply(table, x01, meta, w1, b1, w2, b2, scale, bias, bias_grad, mask, activation, sign)`` -> (density,
    albedo, normals): the native hash grid (``hashgrid_cpu``, features and their derivatives at x01) and
    ``FieldHeadFunction``'s head and tail as one autograd node, so the derivatives' gradient, which the normals make
    rank 1 per point (d loss / d jac = gc (x) v, v = d h_0 / d feats), goes from the head's backward to the grid's
    as its two factors (N x (3 + D) numbers) instead of the (N, 3, D) tensor, written once and read once (7.7 MB
    each way for a 40k-sample view). Differentiable w.r.t. the table and the weights (first order); the same values
    and gradients as the two nodes apart."""

    @staticmethod
    def forward(ctx, table, x01, meta, w1, b1, w2, b2, scale, bias, bias_grad, mask, activation: str, sign: float):
        feats, jac = hashgrid_cpu.forward(x01, table, meta, True)
        out, saved = _field_forward(feats, jac, w1, b1, w2, b2, scale, bias, bias_grad, mask, activation, sign)
        ctx.save_for_backward(x01, *saved)
        ctx.meta, ctx.table_shape, ctx.activation, ctx.sign = meta, tuple(table.shape), activation, float(sign)
        ctx.set_materialize_grads(False)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_density, g_albedo, g_normals):
        x01, *saved = ctx.saved_tensors
        need_table, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[3:7]
        gf, factors, gw1, gb1, gw2, gb2 = _field_backward(
            saved, ctx.activation, ctx.sign, (g_density, g_albedo, g_normals),
            (need_table, need_table and g_normals is not None) + need_w, factorised=True)
        grad_table = None
        if need_table:
            grad_table = hashgrid_cpu.backward(x01, ctx.table_shape, x01.dtype, ctx.meta, gf, None,
                                               grad_dout_factors=factors)
        return (grad_table, None, None, gw1, gb1, gw2, gb2) + (None,) * 6
