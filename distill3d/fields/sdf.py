"""Signed-distance field rendered volumetrically with VolSDF's density (Yariv et al. 2021, eq. 2-3) -- TextMesh's
geometry (Tsalicoglou et al. 2023, Sec. 3.1).

    s(x) = s_init(x) + h(x),          sigma(x) = alpha * Psi_beta(-s(x)),   alpha = 1 / beta,

with Psi_beta the CDF of the zero-mean Laplace distribution with scale beta,

    Psi_beta(u) = 1/2 exp(u / beta)            for u <= 0
                = 1 - 1/2 exp(-u / beta)       for u > 0,

so sigma is alpha/2 on the surface, tends to alpha deep inside (s < 0) and to 0 outside. ``s_init`` is the sphere
initialisation (|x| - r; "none" for a zero prior) and h a small MLP on the hash-grid features whose SDF output starts
near 0, so the optimisation starts from a sphere. beta is learnable (log-parameterised, floored at ``beta_min``)
or fixed (``learn_beta=False``). Normals are grad s / |grad s| (outward). Points outside [-bound, bound]^3 have
zero density.

The field speaks the renderer's protocol (``query``/``density``/``bound``, see fields/nerf.py), so the generic SDS
loop and ``render_field`` use it unchanged; ``iso_inside = "below"`` and ``iso_level = 0.0`` tell mesh extraction to
run marching cubes on ``sdf`` at its zero level. ``eikonal_loss`` is the regulariser (|grad s| - 1)^2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from distill3d.fields.encoding import HashGridConfig, HashGridEncoding
from distill3d.fields.files import read_field, write_field
from distill3d.fields.head import FieldTail, encoded_field_head
from distill3d.fields.jacobian import mlp_forward, mlp_with_input_grad
from distill3d.fields.nerf import FieldOutput, inside_box


def laplace_cdf(u: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """Psi_beta(u): CDF of the zero-mean Laplace distribution with scale beta, elementwise; stable for any u
    (written as 1/2 + 1/2 sign(u) (1 - exp(-|u| / beta)), differentiable w.r.t. u and beta)."""
    return 0.5 - 0.5 * torch.sign(u) * torch.expm1(-u.abs() / beta)


def volsdf_density(s: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """VolSDF density sigma = (1 / beta) * Psi_beta(-s) for signed distances s (negative inside)."""
    return laplace_cdf(-s, beta) / beta


@dataclass
class SDFConfig:
    """SDF field hyper-parameters (defaults sized like ``FieldConfig`` for 32x32 CPU renders)."""

    encoding: HashGridConfig = field(default_factory=lambda: HashGridConfig(
        n_levels=6, features_per_level=2, log2_hashmap_size=16, base_resolution=16, max_resolution=64))
    hidden_width: int = 32
    hidden_layers: int = 1
    init: str = "sphere"  # "sphere": s_init = |x| - init_radius | "none": s_init = 0
    init_radius: float = 0.5
    beta_init: float = 0.05
    beta_min: float = 0.01
    learn_beta: bool = True
    sdf_output_scale: float = 0.1  # initial scale of the MLP's SDF output weights (small: start at s_init)

    @property
    def bound(self) -> float:
        return self.encoding.bound

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SDFConfig":
        d = dict(d)
        d["encoding"] = HashGridConfig(**d["encoding"])
        return cls(**d)


class SDFField(nn.Module):
    """x (N, 3) world points -> signed distance s (N,), VolSDF density sigma (N,) and albedo (N, 3)."""

    iso_inside = "below"  # mesh extraction: inside where sdf < iso_level
    iso_level = 0.0

    def __init__(self, cfg: SDFConfig | None = None):
        super().__init__()
        self.cfg = cfg or SDFConfig()
        if self.cfg.init not in ("sphere", "none"):
            raise ValueError(f"unknown SDF init {self.cfg.init!r}")
        if not 0 < self.cfg.beta_min <= self.cfg.beta_init:
            raise ValueError("need 0 < beta_min <= beta_init")
        self.encoding = HashGridEncoding(self.cfg.encoding)
        layers: list[nn.Module] = []
        d = self.encoding.output_dim
        for _ in range(self.cfg.hidden_layers):
            layers += [nn.Linear(d, self.cfg.hidden_width), nn.ReLU(inplace=True)]
            d = self.cfg.hidden_width
        layers.append(nn.Linear(d, 4))
        self.mlp = nn.Sequential(*layers)
        with torch.no_grad():
            self.mlp[-1].weight[0].mul_(self.cfg.sdf_output_scale)
            self.mlp[-1].bias[0].zero_()
        self.log_beta = nn.Parameter(torch.tensor(math.log(self.cfg.beta_init)), requires_grad=self.cfg.learn_beta)

    @property
    def bound(self) -> float:
        return self.cfg.bound

    @property
    def beta(self) -> torch.Tensor:
        """Scalar beta = max(exp(log_beta), beta_min)."""
        return self.log_beta.exp().clamp_min(self.cfg.beta_min)

    def sdf_init(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) -> (N,) the initial shape's signed distance (sphere of ``init_radius`` or 0)."""
        if self.cfg.init == "sphere":
            return x.norm(dim=-1) - self.cfg.init_radius
        return torch.zeros_like(x[:, 0])

    def sdf_init_grad(self, x: torch.Tensor) -> torch.Tensor | None:
        """(N, 3) -> (N, 3) the initial shape's spatial gradient (x / |x| for the sphere), None where it is 0."""
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12) if self.cfg.init == "sphere" else None

    def _raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) -> signed distance (N,) and albedo logits (N, 3)."""
        h = mlp_forward(self.mlp, self.encoding(x), x)
        return h[:, 0] + self.sdf_init(x), h[:, 1:]

    def _density(self, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sigma = volsdf_density(s, self.beta)
        return torch.where(inside_box(x, self.bound), sigma, torch.zeros_like(sigma))

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3) -> signed distance (N,), negative inside."""
        return self._raw(x)[0]

    def _raw_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 3) -> signed distance (N,), albedo logits (N, 3) and grad_x s (N, 3): analytic, first-order
        differentiable (no double backward)."""
        feats, jac = self.encoding.forward_with_jacobian(x)
        h, grad = mlp_with_input_grad(self.mlp, feats, jac)
        init_grad = self.sdf_init_grad(x)
        return h[:, 0] + self.sdf_init(x), h[:, 1:], grad if init_grad is None else grad + init_grad

    def sdf_and_gradient(self, x: torch.Tensor, create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 3) -> s (N,), grad_x s (N, 3) (differentiable with ``create_graph``, e.g. for the eikonal term;
        detached otherwise)."""
        s, _, g = self._raw_and_grad(x)
        return s, (g if create_graph else g.detach())

    def query(self, x: torch.Tensor, *, normals: bool = False, create_graph: bool = False) -> FieldOutput:
        """Density, albedo and optionally normals n = grad s / |grad s| at x (N, 3); same contract as
        ``RadianceField.query`` (``create_graph=True`` lets losses on normals train the SDF). The head gives s
        (``head.field_head`` with no activation, the initial shape's distance as bias), VolSDF's density reads it."""
        grad = self.sdf_init_grad(x) if normals else None
        out = encoded_field_head(self.encoding, self.mlp, x, FieldTail("none", 1.0, self.sdf_init(x), grad), normals)
        n = out.normals if out.normals is None or create_graph else out.normals.detach()
        return FieldOutput(self._density(out.density, x), out.albedo, n)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 3) -> (sigma (N,), albedo (N, 3))."""
        out = self.query(x)
        return out.sigma, out.albedo

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3) -> sigma (N,)."""
        return self._density(self.sdf(x), x)

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 3) -> albedo (N, 3) in [0, 1]."""
        return torch.sigmoid(self._raw(x)[1])

    def normals(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """x (N, 3) -> unit outward normals (N, 3) = grad s / |grad s|."""
        return self.query(x, normals=True, create_graph=create_graph).normals

    def eikonal_loss(self, n_points: int = 2048, generator: torch.Generator | None = None,
                     near_surface: float = 0.5) -> torch.Tensor:
        """mean (|grad s(x)| - 1)^2 over ``n_points`` points (differentiable): a ``near_surface`` share of them are
        the candidates with the smallest |s| among 4x as many uniform ones (the shell the renderer sees, where a
        flat SDF would spread VolSDF's density into a fog off the zero level set), the rest uniform in the box."""
        dev = self.log_beta.device
        n_near = int(n_points * near_surface)
        x = (torch.rand(n_points - n_near + 4 * n_near, 3, generator=generator).to(dev) * 2 - 1) * self.bound
        if n_near > 0:
            cand = x[n_points - n_near:]
            with torch.no_grad():
                idx = self.sdf(cand).abs().topk(n_near, largest=False).indices
            x = torch.cat([x[: n_points - n_near], cand[idx]])
        _, g = self.sdf_and_gradient(x, create_graph=True)
        return ((g.norm(dim=-1) - 1.0) ** 2).mean()

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Learning-rate groups: hash tables ("encoding"), MLP and beta ("mlp")."""
        mlp = list(self.mlp.parameters()) + ([self.log_beta] if self.cfg.learn_beta else [])
        return {"encoding": list(self.encoding.parameters()), "mlp": mlp}

    def save(self, directory: str | Path) -> None:
        """Write ``field.json`` (type + config) and ``field.safetensors`` (weights) into ``directory``."""
        write_field(self, directory, "SDFField", self.cfg.to_dict())

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> "SDFField":
        config, weights = read_field(directory, "SDFField")
        f = cls(SDFConfig.from_dict(config))
        f.load_state_dict(weights)
        return f.to(device)
