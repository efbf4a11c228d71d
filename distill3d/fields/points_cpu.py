"""The per-point constants a field query needs before its grid and head, in one native pass over the points (CPU):
the encoding's unit-cube coordinates x01 = clamp((x + b) / 2b) and derivative factor (1 / 2b inside the box, else
0), and RadianceField's density bias (its blob plus shift, DreamFusion A.2), the blob's spatial gradient and the
support mask (inside the box and the optional ball).

Why native code here: in torch these are ~20 small operations over the (N, 3) points (add, scale, clamp, compare,
all; the blob's square, sum, exp and products; abs, compare, all for the box), each a pass over memory that costs
more inside the distillation loop than alone (the loop's tensors push them out of cache): ~0.85 ms of a red cube's
step at ~40k samples, where one pass costs ~0.1. The torch code stays the reference (``HashGridEncoding._normalise``,
``RadianceField.density_bias_and_grad`` / ``_support``), which the tests compare with. The blob's exp is the C
library's, the sums may fuse multiply-adds: values within a few float32 ulps of torch's, not to the bit.
"""

from __future__ import annotations

import torch

from distill3d.native_build import NativeLibrary, ptr

_SOURCE = r"""
// distill3d field point constants (see distill3d/fields/points_cpu.py). No torch headers.
#include <cmath>
#include <cstdint>
#include <omp.h>

namespace {

// x (n, 3) -> x01 (n, 3) clamped to [0, 1] and jscale (n,) = scale where every (x + b) * scale is in [0, 1], else 0
// (HashGridEncoding._normalise: the same two roundings; NaN stays NaN and counts as outside).
template <typename T>
void unit_cube_impl(int64_t n, const T* x, T bound, T scale, T* x01, T* jscale) {
#pragma omp parallel for schedule(static) if (n > 8192)
  for (int64_t i = 0; i < n; ++i) {
    bool in = true;
    for (int k = 0; k < 3; ++k) {
      const T u = (x[3 * i + k] + bound) * scale;
      in = in && (u >= T(0) && u <= T(1));
      x01[3 * i + k] = u < T(0) ? T(0) : (u > T(1) ? T(1) : u);
    }
    if (jscale) jscale[i] = in ? scale : T(0);
  }
}

// RadianceField's density bias and support (nerf.py): blob 0 none, 1 gaussian d exp(-|x|^2 / 2r^2), 2 linear
// d (1 - |x| / r); bias = blob + shift, bias_grad (n, 3) = d blob / d x (null: not written), mask (n,) = 1 inside
// [-b, b]^3 and, with support_r2 >= 0, |x|^2 <= support_r2, else 0 (null: not written).
template <typename T>
void density_constants_impl(int64_t n, const T* x, int blob, T density, T radius, T shift, T bound, T support_r2,
                            T* bias, T* bias_grad, T* mask) {
  const T inv2r2 = T(1) / (T(2) * radius * radius);
#pragma omp parallel for schedule(static) if (n > 8192)
  for (int64_t i = 0; i < n; ++i) {
    const T x0 = x[3 * i], x1 = x[3 * i + 1], x2 = x[3 * i + 2];
    const T r2 = x0 * x0 + x1 * x1 + x2 * x2;
    T b = 0, g = 0;  // blob and d blob / d x = x * g
    if (blob == 1) {
      b = density * std::exp(-r2 * inv2r2);
      g = b * (T(-1) / (radius * radius));
    } else if (blob == 2) {
      const T len = std::sqrt(r2);
      b = density * (T(1) - len / radius);
      g = -density / radius / (len > T(1e-12) ? len : T(1e-12));
    }
    if (bias) bias[i] = b + shift;
    if (bias_grad) {
      bias_grad[3 * i] = x0 * g;
      bias_grad[3 * i + 1] = x1 * g;
      bias_grad[3 * i + 2] = x2 * g;
    }
    if (mask) {
      bool in = std::fabs(x0) <= bound && std::fabs(x1) <= bound && std::fabs(x2) <= bound;
      if (support_r2 >= T(0)) in = in && r2 <= support_r2;
      mask[i] = in ? T(1) : T(0);
    }
  }
}

}  // namespace

extern "C" {

int d3fp_version() { return 1; }

#define D3FP_DEFINE(SUFFIX, T)                                                                                 \
  void d3fp_unit_cube_##SUFFIX(int64_t n, const T* x, double bound, double scale, T* x01, T* jscale) {          \
    unit_cube_impl<T>(n, x, T(bound), T(scale), x01, jscale);                                                \
  }                                                                                                          \
  void d3fp_density_constants_##SUFFIX(int64_t n, const T* x, int blob, double density, double radius,         \
                                       double shift, double bound, double support_r2, T* bias, T* bias_grad, \
                                       T* mask) {                                                            \
    density_constants_impl<T>(n, x, blob, T(density), T(radius), T(shift), T(bound), T(support_r2), bias,    \
                              bias_grad, mask);                                                              \
  }

D3FP_DEFINE(f32, float)
D3FP_DEFINE(f64, double)

}  // extern "C"
"""

NATIVE = NativeLibrary("distill3d_field_points", _SOURCE, "field point kernels", version=("d3fp_version", 1),
                       kernels={"d3fp_unit_cube": ("lpddpp", None),
                                "d3fp_density_constants": ("lpidddddppp", None)})

BLOBS = {"none": 0, "gaussian": 1, "linear": 2}  # the kernel's codes of FieldConfig.blob


def applies(x: torch.Tensor) -> bool:
    """The kernels take these points: a CPU float32 / float64 (N, 3) tensor without a recorded gradient, kernels
    built and enabled (``DISTILL3D_NATIVE``)."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 2
            and x.shape[1] == 3 and not (x.requires_grad and torch.is_grad_enabled()) and NATIVE.available())


def unit_cube(x: torch.Tensor, bound: float, with_factor: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (N, 3) -> x01 (N, 3) = clamp((x + bound) / (2 bound), 0, 1), contiguous, and with ``with_factor`` the
    derivatives' world factor (N,): 1 / (2 bound) where x is inside the box, else 0."""
    x = x.detach().contiguous()
    n = x.shape[0]
    x01 = torch.empty(n, 3, dtype=x.dtype)
    jscale = torch.empty(n, dtype=x.dtype) if with_factor else None
    if n:
        NATIVE.kernel("d3fp_unit_cube", x.dtype)(n, ptr(x), float(bound), 1.0 / (2 * float(bound)), ptr(x01),
                                                ptr(jscale))
    return x01, jscale


def density_constants(x: torch.Tensor, blob: str, density: float, radius: float, shift: float, bound: float,
                      support_radius: float | None, with_grad: bool
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """RadianceField's bias (N,) (blob + shift), with ``with_grad`` the blob's gradient (N, 3), and the support
    mask (N,) (1 inside the box and the optional ball of ``support_radius``, else 0) of x (N, 3)."""
    x = x.detach().contiguous()
    n = x.shape[0]
    bias, mask = torch.empty(n, dtype=x.dtype), torch.empty(n, dtype=x.dtype)
    bias_grad = torch.empty(n, 3, dtype=x.dtype) if with_grad else None
    r2 = -1.0 if support_radius is None else float(support_radius) ** 2
    if n:
        NATIVE.kernel("d3fp_density_constants", x.dtype)(n, ptr(x), BLOBS[blob], float(density), float(radius),
                                                        float(shift), float(bound), r2, ptr(bias), ptr(bias_grad),
                                                        ptr(mask))
    return bias, bias_grad, mask
