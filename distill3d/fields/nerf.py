"""Density + albedo radiance field for score distillation (DreamFusion Sec. 3.1, with an Instant-NGP encoding).

sigma(x) = act(h(x) + sigma_blob(x) + density_shift), albedo(x) = sigmoid(g(x)), with h, g one small MLP on the
hash-grid features. DreamFusion's density blob (Appendix A.2) sigma_blob(x) = lambda * exp(-|x|^2 / (2 r^2))
starts the optimisation from a ball at the origin. Points outside [-bound, bound]^3 (and, with ``support_radius``,
outside that ball) have zero density.

Every field the renderer accepts implements ``query(x, normals=..., create_graph=...) -> FieldOutput`` and has
``bound``; an SDF field (TextMesh) implements the same method with its own density conversion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from distill3d.fields import points_cpu
from distill3d.fields.encoding import HashGridConfig, HashGridEncoding
from distill3d.fields.files import read_field, write_field
from distill3d.fields.head import FieldTail, encoded_field_head


def inside_box(x: torch.Tensor, bound: float) -> torch.Tensor:
    """(N, 3) -> (N,) bool: x in [-bound, bound]^3, the box outside which every field's density is zero."""
    return (x.abs() <= bound).all(dim=-1)


@dataclass
class FieldConfig:
    """Field hyper-parameters. Defaults are sized for 32x32 CPU renders (objects of radius ~0.6 in [-1, 1]^3)."""

    encoding: HashGridConfig = field(default_factory=lambda: HashGridConfig(
        n_levels=8, features_per_level=2, log2_hashmap_size=16, base_resolution=16, max_resolution=128))
    hidden_width: int = 32
    hidden_layers: int = 1
    density_activation: str = "softplus"  # "softplus" | "trunc_exp"
    blob: str = "gaussian"  # "gaussian" (DreamFusion) | "linear" (Magic3D: lambda * (1 - |x| / r)) | "none"
    blob_density: float = 10.0
    blob_radius: float = 0.3
    density_shift: float = -4.0  # constant added before the activation so empty space starts (nearly) empty
    # Density is zero outside the ball of this radius (None: outside the box only). A ball that holds the objects
    # but not the frame's corners takes away the field's cheapest fake background: an opaque shell near the box's
    # faces fills every view and passes for a pastel background (MVDream's white cylinder, see params.yaml).
    support_radius: float | None = None

    @property
    def bound(self) -> float:
        return self.encoding.bound

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FieldConfig":
        d = dict(d)
        d["encoding"] = HashGridConfig(**d["encoding"])
        return cls(**d)


class FieldOutput(NamedTuple):
    """sigma (N,) >= 0, albedo (N, 3) in [0, 1], normals (N, 3) unit outward or None."""

    sigma: torch.Tensor
    albedo: torch.Tensor
    normals: torch.Tensor | None


class RadianceField(nn.Module):
    """x (N, 3) world points -> density sigma (N,) and albedo (N, 3)."""

    def __init__(self, cfg: FieldConfig | None = None):
        super().__init__()
        self.cfg = cfg or FieldConfig()
        self.encoding = HashGridEncoding(self.cfg.encoding)
        layers: list[nn.Module] = []
        d = self.encoding.output_dim
        for _ in range(self.cfg.hidden_layers):
            layers += [nn.Linear(d, self.cfg.hidden_width), nn.ReLU(inplace=True)]
            d = self.cfg.hidden_width
        layers.append(nn.Linear(d, 4))
        self.mlp = nn.Sequential(*layers)
        if self.cfg.density_activation not in ("softplus", "trunc_exp"):
            raise ValueError(f"unknown density_activation {self.cfg.density_activation!r}")
        if self.cfg.blob not in ("gaussian", "linear", "none"):
            raise ValueError(f"unknown blob {self.cfg.blob!r}")
        r = self.cfg.support_radius
        if r is not None and not 0 < r <= self.bound * 3**0.5:
            raise ValueError(f"support_radius must be in (0, {self.bound * 3**0.5:.3g}] (the box's half diagonal), "
                             f"got {r}; leave it unset to bound the field by its box only")

    @property
    def bound(self) -> float:
        return self.cfg.bound

    def _blob(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N,) the density blob (DreamFusion A.2 / Magic3D)."""
        c = self.cfg
        if c.blob == "gaussian":
            return c.blob_density * torch.exp(-(x * x).sum(-1) / (2 * c.blob_radius**2))
        if c.blob == "linear":
            return c.blob_density * (1 - x.norm(dim=-1) / c.blob_radius)
        return torch.zeros_like(x[:, 0])

    def density_bias(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N,) pre-activation bias: blob plus ``density_shift``."""
        return self._blob(x) + self.cfg.density_shift

    def density_bias_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) -> ``density_bias`` (N,) and its spatial gradient (N, 3), the blob computed once."""
        c = self.cfg
        blob = self._blob(x)
        if c.blob == "gaussian":
            grad = x * (blob * (-1.0 / c.blob_radius**2))[:, None]
        elif c.blob == "linear":
            grad = x * (-c.blob_density / c.blob_radius / x.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        else:
            grad = torch.zeros_like(x)
        return blob + c.density_shift, grad

    def _support(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) 1 where the field may have density (inside the box and, with ``support_radius``, the ball), else 0."""
        inside = inside_box(x, self.bound)
        if self.cfg.support_radius is not None:
            inside = inside & ((x * x).sum(-1) <= self.cfg.support_radius**2)
        return inside.to(x.dtype)

    def _tail(self, x: torch.Tensor, normals: bool) -> FieldTail:
        """The head's tail at x (N, 3): the density bias, its gradient (with ``normals``) and the support mask; one
        native pass (``points_cpu``) where it applies, else the torch code above (the reference)."""
        c = self.cfg
        if points_cpu.applies(x):
            bias, bias_grad, mask = points_cpu.density_constants(x, c.blob, c.blob_density, c.blob_radius,
                                                                 c.density_shift, c.bound, c.support_radius, normals)
        else:
            bias, bias_grad = self.density_bias_and_grad(x) if normals else (self.density_bias(x), None)
            mask = self._support(x)
        return FieldTail(c.density_activation, -1.0, bias, bias_grad, mask)

    def query(self, x: torch.Tensor, *, normals: bool = False, create_graph: bool = False) -> FieldOutput:
        """Density, albedo and optionally normals at x (N, 3) (``head.field_head`` with this field's tail:
        sigma = act(h_0 + blob + shift) inside the support, albedo = sigmoid(h_1:)).

        Normals n = -grad sigma / |grad sigma|, the gradient computed analytically with the features
        (``forward_with_jacobian`` and the head's input gradient: the same value autograd gives, without its double
        backward). The gradient is taken of the pre-activation density, which has the same direction (the
        activation is monotonic) and no exp overflow. ``create_graph=True`` keeps the normals differentiable so
        losses on them (orientation loss, Lambertian shading) train the field; otherwise they are detached.
        """
        out = encoded_field_head(self.encoding, self.mlp, x, self._tail(x, normals), normals)
        n = out.normals if out.normals is None or create_graph else out.normals.detach()
        return FieldOutput(out.density, out.albedo, n)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 3) -> (sigma (N,), albedo (N, 3))."""
        out = self.query(x)
        return out.sigma, out.albedo

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3) -> sigma (N,)."""
        return self.query(x).sigma

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3) -> albedo (N, 3) in [0, 1]."""
        return self.query(x).albedo

    def normals(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """x (N, 3) -> unit outward normals (N, 3) = -grad sigma / |grad sigma|."""
        return self.query(x, normals=True, create_graph=create_graph).normals

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by learning-rate group: the hash tables ("encoding") and the MLP ("mlp")."""
        return {"encoding": list(self.encoding.parameters()), "mlp": list(self.mlp.parameters())}

    def save(self, directory: str | Path) -> None:
        """Write ``field.json`` (type + config) and ``field.safetensors`` (weights) into ``directory``."""
        write_field(self, directory, "RadianceField", self.cfg.to_dict())

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> "RadianceField":
        config, weights = read_field(directory, "RadianceField")
        f = cls(FieldConfig.from_dict(config))
        f.load_state_dict(weights)
        return f.to(device)
