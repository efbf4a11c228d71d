"""The spatial gradient of a field's MLP output without autograd's double backward (normals and the eikonal term):
the MLP's input gradient of its output 0 by one reverse pass through a Linear/ReLU stack, contracted with the
encoding's spatial derivatives (``HashGridEncoding.forward_with_jacobian``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distill3d.fields import hashgrid_cpu, mlp_head_cpu


@dataclass(frozen=True)
class SpatialJacobian:
    """d features / d x (N, 3, D) as ``raw`` times a per-point factor ``scale`` (N,) (None: 1): the encoding's
    derivatives in its unit cube, with the chain rule to world units and the zero outside the box kept apart, so
    they multiply the (N, 3) contraction instead of the (N, 3, D) tensor (and its gradient)."""

    raw: torch.Tensor
    scale: torch.Tensor | None = None

    def dense(self) -> torch.Tensor:
        """d features / d x (N, 3, D)."""
        return self.raw if self.scale is None else self.raw * self.scale[:, None, None]

    def contract(self, v: torch.Tensor) -> torch.Tensor:
        """sum_d jac[:, :, d] * v[:, d] (N, 3) for v (N, D): the spatial gradient of a scalar whose gradient w.r.t.
        the features is v. On CPU one fused native pass (``hashgrid_cpu.ContractFunction``) when the kernels are
        available, else torch's broadcast multiply and sum."""
        raw = self.raw
        if (raw.device.type == "cpu" and raw.dtype in (torch.float32, torch.float64) and raw.dtype == v.dtype
                and hashgrid_cpu.available()):
            out = hashgrid_cpu.ContractFunction.apply(raw, v)
        else:
            out = (raw * v.unsqueeze(1)).sum(-1)
        return out if self.scale is None else out * self.scale[:, None]


def mlp_with_input_grad(mlp: nn.Sequential, features: torch.Tensor, jac: SpatialJacobian | torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``mlp(features)`` (N, O) and d output[:, 0] / d x (N, 3), given the features (N, D) and their derivatives
    d features / d x (a ``SpatialJacobian`` or a dense (N, 3, D) tensor). ``mlp`` is a sequence of ``nn.Linear``
    and ``nn.ReLU`` ending in a Linear; a Linear-ReLU-Linear one on CPU runs as the native fused head
    (``mlp_head_cpu.MLPHeadFunction``, when ``fused_head_applies``), any other as the torch code below.

    Output 0 is one number per point, so its input gradient is one reverse pass (v <- v W through a Linear,
    v <- v * 1[z > 0] through a ReLU, from v = the last layer's row 0): d out0 / d features (N, D), then contracted
    with ``jac``: 3x less work than pushing the 3 columns of ``jac`` forward. Written with differentiable ops, so
    the result is (first-order) differentiable w.r.t. the MLP's weights and whatever ``features`` / ``jac`` depend
    on."""
    layers = list(mlp)
    if not layers or not isinstance(layers[-1], nn.Linear):
        raise TypeError("mlp_with_input_grad needs a Linear/ReLU stack ending in a Linear")
    jac = jac if isinstance(jac, SpatialJacobian) else SpatialJacobian(jac)
    if fused_head_applies(layers, features, jac.raw):
        h, c = mlp_head_cpu.MLPHeadFunction.apply(features, jac.raw, layers[0].weight, layers[0].bias,
                                                  layers[2].weight, layers[2].bias)
        return h, c if jac.scale is None else c * jac.scale[:, None]
    h, masks = features, []
    for layer in layers:
        if isinstance(layer, nn.Linear):
            h = layer(h)
        elif isinstance(layer, nn.ReLU):
            masks.append((h > 0).to(h.dtype))
            h = torch.relu(h)
        else:
            raise TypeError(f"mlp_with_input_grad handles Linear and ReLU layers, not {type(layer).__name__}")
    v = layers[-1].weight[:1].expand(features.shape[0], -1)  # d out0 / d (last layer's input), (N, H)
    for layer in reversed(layers[:-1]):
        v = v * masks.pop() if isinstance(layer, nn.ReLU) else v @ layer.weight
    return h, jac.contract(v)  # (N, 3, D) . (N, D) -> (N, 3)


def fused_head_applies(layers: list[nn.Module], features: torch.Tensor, jac_raw: torch.Tensor | None) -> bool:
    """The native fused head (``mlp_head_cpu.MLPHeadFunction``) computes this MLP on these tensors: ``head_kernel_
    applies`` to the features' dtype and device, (N, D) features, the Jacobian of the same dtype and device."""
    return (features.dim() == 2 and (jac_raw is None or (jac_raw.device == features.device
                                                         and jac_raw.dtype == features.dtype))
            and head_kernel_applies(layers, features.dtype, features.device))


def head_kernel_applies(layers: list[nn.Module], dtype: torch.dtype, device: torch.device) -> bool:
    """The native head kernels take this MLP: Linear-ReLU-Linear with biases, CPU float32/float64 of ``dtype``,
    sizes within their limits, kernels built and enabled."""
    if len(layers) != 3 or not (isinstance(layers[0], nn.Linear) and isinstance(layers[1], nn.ReLU)
                                and isinstance(layers[2], nn.Linear)):
        return False
    l1, l2 = layers[0], layers[2]
    if l1.bias is None or l2.bias is None or device.type != "cpu" or any(
            t.device.type != "cpu" or t.dtype != dtype for t in (l1.weight, l2.weight, l1.bias, l2.bias)):
        return False
    return (dtype in (torch.float32, torch.float64)
            and mlp_head_cpu.head_fits(l1.in_features, l1.out_features, l2.out_features) and mlp_head_cpu.available())


def mlp_forward(mlp: nn.Sequential, features: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """``mlp(features)``, through the native fused head when it applies (a Linear-ReLU-Linear MLP on CPU) and the
    points ``x`` the features come from record no gradient: the head is once differentiable, and a gradient w.r.t.
    x (autograd normals, ``create_graph``) needs a double backward through the MLP, which torch's layers give."""
    layers = list(mlp)
    if not (x is not None and x.requires_grad and torch.is_grad_enabled()) and fused_head_applies(layers, features,
                                                                                                   None):
        return mlp_head_cpu.MLPHeadFunction.apply(features, None, layers[0].weight, layers[0].bias,
                                                  layers[2].weight, layers[2].bias)
    return mlp(features)
