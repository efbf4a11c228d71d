"""CIELAB conversion, ΔE and colour naming against reference values."""

import numpy as np
import pytest
import torch

from distill3d.metrics.colour import delta_e, nearest_colour_name, rgb_to_lab
from distill3d.toyworld.vocab import COLOURS


def test_rgb_to_lab_reference_values() -> None:
    lab = rgb_to_lab(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert lab.shape == (3, 3) and lab.dtype == torch.float32
    # sRGB D65 reference: white L=100, black L=0, pure red (53.24, 80.09, 67.20)
    assert torch.allclose(lab[0], torch.tensor([100.0, 0.0, 0.0]), atol=0.01)
    assert torch.allclose(lab[1], torch.zeros(3), atol=0.01)
    assert torch.allclose(lab[2], torch.tensor([53.24, 80.09, 67.20]), atol=0.05)


def test_delta_e_zero_identity_white_black_and_broadcast() -> None:
    img = torch.rand(2, 5, 6, 3, generator=torch.Generator().manual_seed(0))
    d = delta_e(img, img)
    assert d.shape == (2, 5, 6) and float(d.abs().max()) < 1e-4
    for method in ("cie76", "ciede2000"):
        assert float(delta_e([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], method=method)) == pytest.approx(100.0, abs=0.01)
    # broadcasting one colour against an image, and symmetry
    d_ab = delta_e(img, torch.tensor([0.85, 0.10, 0.10]), method="ciede2000")
    d_ba = delta_e(torch.tensor([0.85, 0.10, 0.10]), img, method="ciede2000")
    assert d_ab.shape == (2, 5, 6) and torch.allclose(d_ab, d_ba)
    # ΔE76 is the Euclidean Lab distance
    la, lb = rgb_to_lab(img), rgb_to_lab(img.flip(0))
    assert torch.allclose(delta_e(img, img.flip(0)), (la - lb).norm(dim=-1), atol=1e-3)
    with pytest.raises(ValueError):
        delta_e(img, img, method="cie94")


@pytest.mark.parametrize("name", list(COLOURS))
def test_nearest_colour_name_recovers_palette_under_darkening_and_noise(name: str) -> None:
    rgb = np.array(COLOURS[name])
    assert nearest_colour_name(rgb) == name
    assert nearest_colour_name(torch.tensor(rgb * 0.9)) == name
    noisy = np.clip(rgb + np.random.default_rng(1).normal(0, 0.03, 3), 0, 1)
    assert nearest_colour_name(noisy) == name


def test_nearest_colour_name_for_off_palette_colours() -> None:
    assert nearest_colour_name([1.0, 0.0, 0.0]) == "red"
    assert nearest_colour_name((0.0, 0.0, 0.6)) == "blue"
    assert nearest_colour_name([1.0, 0.6, 0.0]) == "orange"
    assert nearest_colour_name([0.5, 0.0, 0.5]) == "purple"
    assert nearest_colour_name([1.0, 1.0, 1.0]) == "white"
    with pytest.raises(ValueError):
        nearest_colour_name(torch.rand(2, 3))
