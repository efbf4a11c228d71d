"""Volume rendering of radiance fields (nerfacc)."""

from distill3d.render.volume import OccupancyCache, ray_box_intersect, render_field

__all__ = ["OccupancyCache", "ray_box_intersect", "render_field"]
