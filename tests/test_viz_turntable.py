"""Turntable frames from ring cameras and GIF writing."""

import functools

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh

from distill3d.mesh.render import render_mesh
from distill3d.mesh.types import TexturedMesh
from distill3d.viz.turntable import mp4_available, save_turntable, turntable_frames


def test_turntable_of_a_mesh_rotates_and_writes_a_looping_gif(tmp_path):
    box = trimesh.creation.box(extents=(1.2, 0.6, 0.3))  # not rotationally symmetric: every frame differs
    mesh = TexturedMesh(torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces, dtype=torch.int64))
    mesh.vertex_colors = (mesh.vertices / 1.2 + 0.5).clamp(0, 1)
    calls = []

    def render(cams, size):
        calls.append(len(cams))
        return render_mesh(mesh, cams, size)

    frames = turntable_frames(render, n_frames=4, elevation=10.0, size=24, batch=3)
    assert frames.shape == (4, 24, 24, 3) and calls == [3, 1]
    # Azimuths 0, 90, 180, 270: frame 0 sees the wide front (+Z), frame 1 the narrow side from +X.
    silhouettes = (frames < 0.99).any(-1)
    coverage = silhouettes.float().mean((1, 2))
    assert coverage[0] > 2 * coverage[1] and coverage[2] > 2 * coverage[3]
    # Views 180 degrees apart see the same silhouette (the box is unchanged by a half turn) but other colours.
    assert (silhouettes[0] != silhouettes[2]).sum() <= 2
    assert (frames[0] - frames[2]).abs().max() > 0.2
    # A dict-returning render function works too.
    frames2 = turntable_frames(functools.partial(render_mesh, mesh), n_frames=4, elevation=10.0, size=24)
    assert torch.allclose(frames, frames2)

    path = save_turntable(frames, tmp_path / "spin.gif", fps=10)
    gif = iio.imread(path, index=None)
    assert gif.shape[0] == 4 and gif.shape[1:3] == (24, 24)
    meta = iio.immeta(path, index=0)
    assert meta.get("loop") == 0 and meta.get("duration") == pytest.approx(100, abs=1)
    # Palette quantisation keeps colours close.
    assert np.abs(gif[..., :3].astype(float) / 255 - frames.numpy()).mean() < 0.03


def test_save_turntable_rejects_bad_input(tmp_path):
    frames = np.random.default_rng(0).random((3, 8, 8, 3))
    with pytest.raises(ValueError):
        save_turntable(frames, tmp_path / "x.avi")
    with pytest.raises(ValueError):
        save_turntable(frames[0], tmp_path / "x.gif")
    if not mp4_available():
        with pytest.raises(RuntimeError):
            save_turntable(frames, tmp_path / "x.mp4")
    else:
        assert save_turntable(frames, tmp_path / "x.mp4").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp files left
