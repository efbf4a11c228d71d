"""Spatial derivatives of a field's MLP output without autograd (no double backward for normals and the eikonal
term): forward-mode through a Linear/ReLU stack, fed by ``HashGridEncoding.forward_with_grad``."""

from __future__ import annotations

import torch
from torch import nn


def mlp_with_input_grad(mlp: nn.Sequential, features: torch.Tensor, jac: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``mlp(features)`` (N, O) and d output[:, 0] / d x (N, 3), given the features (N, D) and their derivatives
    d features / d x (N, 3, D). ``mlp`` is a sequence of ``nn.Linear`` and ``nn.ReLU`` ending in a Linear.

    Chain rule layer by layer: J <- J W^T through a Linear, J <- J * 1[z > 0] through a ReLU; the last Linear is
    applied to output 0 only (the density / SDF channel). Differentiable (first order) w.r.t. the MLP's weights and
    whatever ``features`` / ``jac`` depend on."""
    h, j = features, jac
    layers = list(mlp)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            weight = layer.weight if i < len(layers) - 1 else layer.weight[:1]
            j = j @ weight.T
            h = layer(h)
        elif isinstance(layer, nn.ReLU):
            j = j * (h > 0).to(h.dtype)[:, None, :]
            h = torch.relu(h)
        else:
            raise TypeError(f"mlp_with_input_grad handles Linear and ReLU layers, not {type(layer).__name__}")
    return h, j[:, :, 0]
