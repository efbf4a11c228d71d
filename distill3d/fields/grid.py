"""A density field read from a sampled grid (trilinear), for renders that need the field's opacity many times over
without its network: the automatic iso-level of mesh extraction matches mesh silhouettes against these."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill3d.fields.nerf import FieldOutput


class GridDensityField(nn.Module):
    """values (R, R, R) densities with ``values[i, j, k] = sigma(x_i, y_j, z_k)`` on the grid of
    ``mesh.extract.grid_points`` (corners on the box faces) -> a field with ``bound``, ``density`` and ``query``
    (albedo white, no normals) that ``render.volume.render_field`` renders."""

    def __init__(self, values: torch.Tensor, bound: float = 1.0):
        super().__init__()
        self.bound = float(bound)
        self.register_buffer("grid", values.float().permute(2, 1, 0)[None, None].contiguous())  # (1, 1, z, y, x)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3) world points -> (N,) trilinear density, 0 outside the box."""
        g = (x / self.bound).view(1, -1, 1, 1, 3).to(self.grid.dtype)  # grid_sample reads (x, y, z) in [-1, 1]
        return F.grid_sample(self.grid, g, mode="bilinear", padding_mode="zeros", align_corners=True).view(-1)

    def query(self, x: torch.Tensor, *, normals: bool = False, create_graph: bool = False) -> FieldOutput:
        if normals:
            raise ValueError("a GridDensityField has no normals: render it with shading='albedo'")
        return FieldOutput(self.density(x), torch.ones_like(x), None)
