"""PNG grids: layout, nearest-neighbour upscaling, labels."""

import numpy as np
import pytest
import torch
from PIL import Image

from distill3d.viz.grid import make_grid, save_grid


def solid(colours):
    return torch.tensor(colours, dtype=torch.float32)[:, None, None, :].expand(-1, 4, 4, -1).clone()


def test_layout_scale_and_pixels(tmp_path):
    imgs = solid([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    imgs[0, 0, 0] = torch.tensor([0.0, 0.0, 0.0])  # one black pixel in the top-left of image 0
    path = save_grid(imgs, tmp_path / "g.png", ncols=2, scale=3, pad=1)
    arr = np.asarray(Image.open(path).convert("RGB"))
    assert arr.shape == (2 * 12 + 3, 2 * 12 + 3, 3)  # 2x2 cells of 12 px plus padding
    assert (arr[1:4, 1:4] == 0).all() and (arr[4, 4] == [255, 0, 0]).all()  # the black pixel became a 3x3 block
    assert (arr[1 + 6, 14 + 6] == [0, 255, 0]).all()  # image 1: first row, second column
    assert (arr[14 + 6, 1 + 6] == [0, 0, 255]).all()  # image 2: second row, first column
    assert (arr[14 + 6, 14 + 6] == 255).all()  # empty cell stays white


def test_labels_add_a_text_strip():
    imgs = solid([[0.5, 0.5, 0.5]] * 2)
    plain = np.asarray(make_grid(imgs, ncols=2, scale=8))
    labelled = np.asarray(make_grid(imgs, ncols=2, scale=8, labels=["front", "a very long label that is cut"]))
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] == plain.shape[1]
    strip = labelled[: labelled.shape[0] - plain.shape[0] + 2]
    assert (strip < 128).any()  # dark text was drawn
    with pytest.raises(ValueError):
        make_grid(imgs, labels=["one"])
