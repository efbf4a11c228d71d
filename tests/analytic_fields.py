"""Test fields with known geometry: toy-world SDFs turned into density fields."""

from __future__ import annotations

import torch

from distill3d.fields.nerf import FieldOutput
from distill3d.toyworld import sdf as sdfs


class SdfDensityField(torch.nn.Module):
    """sigma = peak * sigmoid(-sdf / width) of a toy-world object; albedo from the toy world."""

    bound = 1.0

    def __init__(self, spec, peak: float = 1000.0, width: float = 0.003):
        super().__init__()
        self.spec, self.peak, self.width = spec, peak, width

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.peak * torch.sigmoid(-sdfs.sdf(self.spec, x) / self.width)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        return sdfs.albedo(self.spec, x)

    def query(self, x: torch.Tensor, *, normals: bool = False, create_graph: bool = False) -> FieldOutput:
        return FieldOutput(self.density(x), self.albedo(x), None)
