"""Colour metrics in CIELAB (D65, 2-degree observer; sRGB in [0, 1] in). Not differentiable: evaluation only."""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from skimage import color as skcolor

from distill3d.toyworld.vocab import COLOURS

DeltaE = Literal["cie76", "ciede2000"]
ColourLike = torch.Tensor | np.ndarray | Sequence[float]


def _as_numpy(rgb: ColourLike) -> np.ndarray:
    if isinstance(rgb, torch.Tensor):
        rgb = rgb.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(rgb, dtype=np.float64)
    if arr.shape[-1] != 3:
        raise ValueError(f"expected RGB with a last dimension of 3, got shape {arr.shape}")
    return np.clip(arr, 0.0, 1.0)


def rgb_to_lab(rgb: ColourLike) -> torch.Tensor:
    """(..., 3) sRGB in [0, 1] -> (..., 3) CIELAB (L in [0, 100]) as float32 (values outside [0, 1] are clipped)."""
    return torch.from_numpy(skcolor.rgb2lab(_as_numpy(rgb))).float()


def delta_e(rgb_a: ColourLike, rgb_b: ColourLike, method: DeltaE = "cie76") -> torch.Tensor:
    """Per-pixel colour difference of (..., 3) sRGB arrays (broadcast) -> (...) float32.

    ``cie76``: Euclidean distance in CIELAB; ``ciede2000``: the CIEDE2000 formula (~1 = just noticeable).
    """
    a, b = np.broadcast_arrays(_as_numpy(rgb_a), _as_numpy(rgb_b))
    lab_a, lab_b = skcolor.rgb2lab(a), skcolor.rgb2lab(b)
    if method == "cie76":
        d = skcolor.deltaE_cie76(lab_a, lab_b)
    elif method == "ciede2000":
        d = skcolor.deltaE_ciede2000(lab_a, lab_b)
    else:
        raise ValueError(f"unknown delta E method {method!r}: use 'cie76' or 'ciede2000'")
    return torch.from_numpy(np.asarray(d)).float()


def palette_lab(palette: dict[str, tuple[float, float, float]] | None = None) -> tuple[list[str], np.ndarray]:
    """Names and (K, 3) CIELAB values of ``palette`` (default: the toy world's ``COLOURS``)."""
    palette = COLOURS if palette is None else palette
    names = list(palette)
    return names, skcolor.rgb2lab(np.array([palette[n] for n in names], dtype=np.float64))


def nearest_colour_index(
    rgb: ColourLike, palette: dict[str, tuple[float, float, float]] | None = None, method: DeltaE = "ciede2000"
) -> tuple[list[str], torch.Tensor]:
    """(..., 3) sRGB -> (palette names, (...) int64 index of the nearest palette colour by ΔE ``method``)."""
    names, lab_p = palette_lab(palette)
    lab, lab_p = np.broadcast_arrays(skcolor.rgb2lab(_as_numpy(rgb))[..., None, :], lab_p)  # (..., K, 3) each
    d = skcolor.deltaE_cie76(lab, lab_p) if method == "cie76" else skcolor.deltaE_ciede2000(lab, lab_p)
    return names, torch.as_tensor(np.asarray(d).argmin(axis=-1), dtype=torch.int64)


def nearest_colour_name(
    rgb: ColourLike, palette: dict[str, tuple[float, float, float]] | None = None, method: DeltaE = "ciede2000"
) -> str:
    """One (3,) sRGB colour -> name of the nearest toy-world colour (or ``palette`` entry) in CIELAB."""
    arr = _as_numpy(rgb)
    if arr.shape != (3,):
        raise ValueError(f"nearest_colour_name takes one (3,) colour, got shape {arr.shape}")
    names, idx = nearest_colour_index(arr, palette, method)
    return names[int(idx)]
