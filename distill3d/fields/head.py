"""The fields' head: the MLP on the encoding's features and the per-sample tail both field types share.

    density = act(h_0 + bias) where mask > 0, else 0        albedo = sigmoid(h_1:)
    normals = sign * g / max(|g|, 1e-12),  g = d h_0 / d x + bias_grad

RadianceField (DreamFusion 3.1): act = softplus or trunc_exp, bias = the density blob + shift, sign = -1 (normals
point down the density gradient), mask = inside the box / support ball. SDFField (VolSDF): act = none (the output
is the signed distance, which VolSDF's density then reads), bias = the initial shape's distance, sign = +1.

``field_head`` runs it as one fused CPU kernel (``mlp_head_cpu.FieldHeadFunction``) where that applies and as the
torch code below (the reference the kernel is tested against) everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn

from distill3d.fields import jacobian, mlp_head_cpu
from distill3d.fields.jacobian import SpatialJacobian, head_kernel_applies, mlp_forward, mlp_with_input_grad

Activation = Literal["none", "softplus", "trunc_exp"]


class _TruncExp(torch.autograd.Function):
    """exp with its gradient clamped at exp(15) (Instant-NGP / torch-ngp): stable density activation.
    Backward is written with differentiable ops so double backward (autograd normals) works."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


def activate(raw: torch.Tensor, activation: Activation) -> torch.Tensor:
    """The density activation of a pre-activation ``raw``."""
    if activation == "softplus":
        return nn.functional.softplus(raw)
    if activation == "trunc_exp":
        return trunc_exp(raw)
    return raw


@dataclass(frozen=True)
class FieldTail:
    """A field's per-sample constants and choices after its MLP (module docstring). ``bias`` (N,), ``bias_grad``
    (N, 3) (needed with normals), ``mask`` (N,) (> 0: the density is kept; None: everywhere)."""

    activation: Activation
    normal_sign: float
    bias: torch.Tensor
    bias_grad: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def constants(self) -> list[torch.Tensor]:
        return [t for t in (self.bias, self.bias_grad, self.mask) if t is not None]


class HeadOutput(NamedTuple):
    """density (N,), albedo (N, O - 1), normals (N, 3) or None."""

    density: torch.Tensor
    albedo: torch.Tensor
    normals: torch.Tensor | None


def encoded_field_head(encoding: nn.Module, mlp: nn.Sequential, x: torch.Tensor, tail: FieldTail, normals: bool
                       ) -> HeadOutput:
    """``field_head`` on ``encoding``'s features of x (N, 3), with their spatial derivatives for ``normals``. Where
    the native grid and head kernels both take the normals' path (CPU, constants without gradients), one autograd
    node (``mlp_head_cpu.EncodedFieldHeadFunction``): the same values and gradients, the derivatives' gradient
    handed from the head to the grid as its two factors instead of an (N, 3, D) tensor."""
    if not normals:
        return field_head(mlp, encoding(x), None, tail)
    layers = list(mlp)
    table = getattr(encoding, "table", None)
    if (table is not None and hasattr(encoding, "native_jacobian_inputs") and layers[-1].out_features >= 2
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tail.constants()))
            and all(t.dtype == table.dtype for t in tail.constants())
            and head_kernel_applies(layers, table.dtype, table.device)):
        native = encoding.native_jacobian_inputs(x)
        if native is not None:
            x01, meta, scale = native
            return HeadOutput(*mlp_head_cpu.EncodedFieldHeadFunction.apply(
                table, x01, meta, layers[0].weight, layers[0].bias, layers[2].weight, layers[2].bias, scale,
                tail.bias, tail.bias_grad, tail.mask, tail.activation, tail.normal_sign))
    feats, jac = encoding.forward_with_jacobian(x)
    return field_head(mlp, feats, jac, tail)


def field_head(mlp: nn.Sequential, features: torch.Tensor, jac: SpatialJacobian | None, tail: FieldTail
               ) -> HeadOutput:
    """The head and tail on the features (N, D) and, for normals, their spatial derivatives ``jac``. Differentiable
    w.r.t. the MLP and the features (and what they depend on); the tail's constants may carry gradients too (then
    the torch code runs)."""
    layers = list(mlp)
    constants = tail.constants() + ([] if jac is None or jac.scale is None else [jac.scale])
    grad_x = torch.is_grad_enabled() and any(t.requires_grad for t in constants)
    if not grad_x and jacobian.fused_head_applies(layers, features, None if jac is None else jac.raw) and all(
            t.dtype == features.dtype for t in constants) and layers[-1].out_features >= 2:
        out = mlp_head_cpu.FieldHeadFunction.apply(
            features, None if jac is None else jac.raw, layers[0].weight, layers[0].bias, layers[2].weight,
            layers[2].bias, None if jac is None else jac.scale, tail.bias, tail.bias_grad, tail.mask,
            tail.activation, tail.normal_sign)
        return HeadOutput(*out) if jac is not None else HeadOutput(*out, None)
    normals = None
    if jac is None:
        h = mlp(features) if grad_x else mlp_forward(mlp, features)
    else:
        h, grad = mlp_with_input_grad(mlp, features, jac)
        g = grad if tail.bias_grad is None else grad + tail.bias_grad
        normals = tail.normal_sign * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    density = activate(h[:, 0] + tail.bias, tail.activation)
    if tail.mask is not None:
        density = torch.where(tail.mask > 0, density, torch.zeros_like(density))
    return HeadOutput(density, torch.sigmoid(h[:, 1:]), normals)
