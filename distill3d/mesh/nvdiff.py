"""Optional nvdiffrast visibility on CUDA (never required; the torch rasteriser is the tested path).

Only the *visibility* pass (which face each pixel sees) is taken from nvdiffrast when it is installed and the
clip coordinates are on CUDA; barycentrics, interpolation and the silhouette antialiasing stay the torch code of
``rasterize.py`` / ``antialias.py``, so both backends give the same images and gradients up to ties on edges.
Untested here (no CUDA, nvdiffrast cannot be installed): ``tests/test_mesh_rasterize_aa.py`` compares it with the
torch rasteriser and is skipped unless both are available.

nvdiffrast's ``rasterize`` returns (B, H, W, 4) = (u, v, z/w, triangle id + 1) with row 0 at NDC y = -1 (the bottom,
OpenGL's convention); distill3d's row 0 is the top, hence the flip.
"""

from __future__ import annotations

import importlib.util

import torch

from distill3d.mesh.rasterize import Fragments, fragments_from_face_ids

_CONTEXTS: dict = {}


def nvdiffrast_available(device: torch.device | str) -> bool:
    """True when nvdiffrast is importable and ``device`` is a CUDA device."""
    return torch.device(device).type == "cuda" and importlib.util.find_spec("nvdiffrast") is not None


@torch.no_grad()
def rasterize_nvdiffrast(clip: torch.Tensor, faces: torch.Tensor, size: int) -> Fragments:
    """Same contract as ``rasterize.rasterize`` (clip (B, V, 4) on CUDA, faces (F, 3), size S) with nvdiffrast's
    CUDA rasteriser for the visibility. Raises ``RuntimeError`` when nvdiffrast is not usable."""
    if not nvdiffrast_available(clip.device):
        raise RuntimeError("nvdiffrast needs CUDA and the nvdiffrast package")
    import nvdiffrast.torch as dr  # guarded: optional dependency

    key = str(clip.device)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = dr.RasterizeCudaContext(device=clip.device)
    faces = faces.to(clip.device, torch.long)
    rast, _ = dr.rasterize(_CONTEXTS[key], clip.float().contiguous(), faces.int().contiguous(), resolution=[size, size])
    face_id = (rast[..., 3].round().long() - 1).flip(1)
    return fragments_from_face_ids(clip, faces, face_id)
