"""Visualisation: turntable GIF/MP4 (``turntable``) and PNG image grids (``grid``)."""

from distill3d.viz.grid import make_grid, save_grid
from distill3d.viz.turntable import save_turntable, turntable_frames

__all__ = ["make_grid", "save_grid", "save_turntable", "turntable_frames"]
