"""DMTet scene: a deformable tetrahedral grid with a per-vertex SDF, and the coarse field's colour network
(DMTet, Shen et al. 2021; Magic3D's fine stage, Lin et al. 2023, Sec. 4).

The surface is ``marching_tets`` of the SDF over the grid vertices moved by ``tanh(deform) * deform_fraction *
cell_size`` (per axis; fraction < 1/4 cannot invert a tet, see ``tetra.py``); the albedo at a surface point is the
inherited field's ``albedo(x)`` (Magic3D keeps the coarse stage's colour network). Rendering rasterises the surface
(``surface.render_surface``: differentiable barycentrics inside faces, silhouette antialiasing at the edges) and
shades it with ``distill3d.shading``.

It implements the Scene interface of the mesh optimisation loop: ``render``, ``losses``, ``param_groups``,
``step_begin``, ``export_mesh``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from distill3d import shading as shading_mod
from distill3d.cameras import Cameras
from distill3d.mesh.dmtet_init import DMTetInit, EmptySurfaceError, init_from_field
from distill3d.mesh.marching_tets import marching_tets
from distill3d.mesh.regularizers import laplacian_smoothness, normal_consistency
from distill3d.mesh.surface import render_surface
from distill3d.mesh.tetra import TetGrid, tet_grid
from distill3d.mesh.topology import edge_topology
from distill3d.mesh.types import TexturedMesh

__all__ = ["DMTetScene", "DMTetInit", "EmptySurfaceError"]


class DMTetScene(nn.Module):
    """grid: the ``TetGrid`` (kept as non-persistent buffers: rebuilt from ``box_min``, ``box_max``, ``resolution``);
    sdf: (N,) initial SDF (negative inside) -> parameter ``sdf``; parameter ``deform`` (N, 3) starts at 0;
    albedo_field: a module with ``albedo(x)`` (N, 3) -> (N, 3) (e.g. a ``RadianceField``; owned, trained) or None
    (white); backend: rasteriser visibility ("torch", "nvdiffrast", "auto"; see ``surface.rasterize_backend``).
    """

    def __init__(
        self, grid: TetGrid, sdf: torch.Tensor, albedo_field: nn.Module | None = None, deform_fraction: float = 0.25,
        backend: str = "torch",
    ):
        super().__init__()
        if sdf.shape != (grid.vertices.shape[0],):
            raise ValueError(f"sdf must be ({grid.vertices.shape[0]},), got {tuple(sdf.shape)}")
        self.resolution = tuple(grid.resolution)
        self.deform_fraction = float(deform_fraction)
        self.backend = backend
        self.register_buffer("grid_vertices", grid.vertices.clone(), persistent=False)
        self.register_buffer("tets", grid.tets.clone(), persistent=False)
        self.register_buffer("boundary", grid.boundary.clone(), persistent=False)
        self.register_buffer("cell_size", grid.cell_size.clone(), persistent=False)
        self.sdf = nn.Parameter(sdf.detach().clone().float())
        self.deform = nn.Parameter(torch.zeros_like(grid.vertices))
        self.field = albedo_field

    @classmethod
    def from_field(
        cls, field: nn.Module, init: DMTetInit | None = None, deform_fraction: float = 0.25, backend: str = "torch",
    ) -> "DMTetScene":
        """Build from a coarse density field (``dmtet_init.init_from_field``: automatic level, tight box + margin,
        SDF). The field is deep-copied: its colour network becomes the scene's (trained from here), the coarse
        field is left untouched. ``scene.init_info`` records the level and box. Raises ``EmptySurfaceError``."""
        grid, sdf, info = init_from_field(field, init or DMTetInit())
        scene = cls(grid, sdf, copy.deepcopy(field).cpu(), deform_fraction, backend)
        scene.init_info = info
        return scene

    # ---- geometry -------------------------------------------------------------------------------------------
    def grid_positions(self) -> torch.Tensor:
        """(N, 3) deformed grid vertices: p + tanh(deform) * deform_fraction * cell_size."""
        return self.grid_vertices + torch.tanh(self.deform) * (self.deform_fraction * self.cell_size)

    def grid_sdf(self) -> torch.Tensor:
        """(N,) SDF with the grid's boundary vertices kept outside (>= 1e-6), so the surface stays closed."""
        return torch.where(self.boundary, self.sdf.clamp_min(1e-6), self.sdf)

    def surface(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current surface: vertices (M, 3) (differentiable w.r.t. ``sdf`` and ``deform``), faces (K, 3), CCW
        seen from outside. Raises ``EmptySurfaceError`` when the SDF has no sign change left."""
        verts, faces = marching_tets(self.grid_positions(), self.grid_sdf(), self.tets)
        if faces.shape[0] == 0:
            inside = int((self.sdf < 0).sum())
            raise EmptySurfaceError(f"the DMTet surface is empty: {inside} of {self.sdf.numel()} grid SDF values "
                                    "are negative (inside), so there is no sign change")
        return verts, faces

    def _topology(self, faces: torch.Tensor, n_vertices: int):
        """``edge_topology(faces)``, computed once per surface (``render`` and ``losses`` share it)."""
        cached = getattr(self, "_topology_cache", None)
        if cached is None or cached[0] is not faces:
            cached = (faces, edge_topology(faces, n_vertices))
            self._topology_cache = cached
        return cached[1]

    def albedo(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N, 3) albedo in [0, 1] from the inherited field (white without one)."""
        if self.field is None:
            return torch.ones_like(x)
        return self.field.albedo(x)

    # ---- Scene interface ---------------------------------------------------------------------------------------
    def render(
        self, cams: Cameras, size: int, *, shading: str = "albedo", light_dir: torch.Tensor | None = None,
        background: float | torch.Tensor = 1.0, ambient: float = shading_mod.DEFAULT_AMBIENT,
        generator: torch.Generator | None = None,
    ) -> dict:
        """Render B views at size x size (``surface.render_surface``). shading: "albedo", "lambertian",
        "textureless", "normal"; light_dir (B, 3) towards the light (None: headlight); background a grey level or
        (B, 3). Returns rgb (B, H, W, 3), opacity (B, H, W), normal (B, H, W, 3), depth (B, H, W), and the surface
        it rendered: mesh_vertices (M, 3), mesh_faces (K, 3) (for ``losses``). ``generator`` is unused (the render
        is deterministic)."""
        verts, faces = self.surface()
        topo = self._topology(faces, verts.shape[0])
        out = render_surface(verts, faces, cams, size, albedo_fn=self.albedo, shading=shading, light_dir=light_dir,
                             background=background, ambient=ambient, topology=topo, backend=self.backend)
        out["mesh_vertices"], out["mesh_faces"] = verts, faces
        return out

    def losses(self, out: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Mesh regularisers of the rendered surface: loss_normal_consistency (mean 1 - cos between adjacent face
        normals) and loss_laplacian (uniform Laplacian, mean squared); () tensors."""
        verts, faces = (out["mesh_vertices"], out["mesh_faces"]) if "mesh_vertices" in out else self.surface()
        topo = self._topology(faces, verts.shape[0])
        return {"loss_normal_consistency": normal_consistency(verts, faces, topo),
                "loss_laplacian": laplacian_smoothness(verts, faces, topo)}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """"sdf", "deform", and the colour field's groups ("encoding", "mlp" for a ``RadianceField``)."""
        groups: dict[str, list[nn.Parameter]] = {"sdf": [self.sdf], "deform": [self.deform]}
        if self.field is not None:
            if hasattr(self.field, "param_groups"):
                groups.update(self.field.param_groups())
            elif any(True for _ in self.field.parameters()):
                groups["field"] = list(self.field.parameters())
        return groups

    def step_begin(self, step: int, generator: torch.Generator | None = None) -> None:
        """Hook before each optimisation step (nothing to do for DMTet)."""

    @torch.no_grad()
    def export_mesh(self, vertex_colors: bool = False) -> TexturedMesh:
        """The current surface as a ``TexturedMesh`` on CPU (vertices, faces; with ``vertex_colors`` the albedo at
        the vertices)."""
        verts, faces = self.surface()
        colours = self.albedo(verts).float().clamp(0, 1).cpu() if vertex_colors else None
        return TexturedMesh(vertices=verts.float().cpu(), faces=faces.cpu(), vertex_colors=colours)

    # ---- persistence ----------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``dmtet.json`` (box, resolution, deform fraction, the colour field's type and config) and
        ``dmtet.safetensors`` (sdf, deform, colour field weights). Needs a ``RadianceField`` (or no field)."""
        from safetensors.torch import save_file

        from distill3d.fields.nerf import RadianceField

        if self.field is not None and not isinstance(self.field, RadianceField):
            raise TypeError(f"only a RadianceField colour network can be saved, not {type(self.field).__name__}")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        lo, hi = self.grid_vertices.amin(0), self.grid_vertices.amax(0)
        meta = {"type": "DMTetScene", "resolution": list(self.resolution), "box_min": lo.tolist(),
                "box_max": hi.tolist(), "deform_fraction": self.deform_fraction,
                "field": None if self.field is None else {"type": "RadianceField", "config": self.field.cfg.to_dict()}}
        (d / "dmtet.json").write_text(json.dumps(meta, indent=2))
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(d / "dmtet.safetensors"))

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu", backend: str = "torch") -> "DMTetScene":
        from safetensors.torch import load_file

        from distill3d.fields.nerf import FieldConfig, RadianceField

        d = Path(directory)
        meta = json.loads((d / "dmtet.json").read_text())
        if meta.get("type") != "DMTetScene":
            raise ValueError(f"{d} holds a {meta.get('type')!r}, not a DMTetScene")
        grid = tet_grid(tuple(meta["resolution"]), meta["box_min"], meta["box_max"])
        field = None if meta["field"] is None else RadianceField(FieldConfig.from_dict(meta["field"]["config"]))
        scene = cls(grid, torch.zeros(grid.vertices.shape[0]), field, meta["deform_fraction"], backend)
        scene.load_state_dict(load_file(str(d / "dmtet.safetensors")))
        return scene.to(device)
