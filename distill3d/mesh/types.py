"""The mesh artifact type passed between mesh stages (extraction, texturing, export, rendering)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TexturedMesh:
    """A triangle mesh with optional UV texture and/or vertex colours. World units, camera convention of
    ``distill3d.cameras``; faces are counter-clockwise seen from outside.

    vertices (V, 3) float32; faces (F, 3) int64; uv (V, 2) in [0, 1] with v up (glTF flips on export);
    texture (Ht, Wt, 3) float32 in [0, 1]; vertex_colors (V, 3) float32 in [0, 1].
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    uv: torch.Tensor | None = None
    texture: torch.Tensor | None = None
    vertex_colors: torch.Tensor | None = None

    @property
    def has_uv_texture(self) -> bool:
        """True when the mesh carries a texture image and the uv to read it."""
        return self.texture is not None and self.uv is not None

    @property
    def is_coloured(self) -> bool:
        """True when the mesh has any colour of its own: a uv texture or vertex colours."""
        return self.has_uv_texture or self.vertex_colors is not None

    def to(self, device: torch.device | str) -> "TexturedMesh":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TexturedMesh(*(move(getattr(self, f)) for f in ("vertices", "faces", "uv", "texture", "vertex_colors")))
