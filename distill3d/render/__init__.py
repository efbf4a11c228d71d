"""Volume rendering of radiance fields: ``volume`` (nerfacc quadrature, occupancy grid).

Import the modules by name; this file imports nothing (see distill3d/fields/__init__.py)."""
