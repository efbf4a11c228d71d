"""Visualisation: ``turntable`` (GIF/MP4), ``grid`` (PNG image grids), ``asset_views`` (an asset's views).

Import the modules by name; this file imports nothing (see distill3d/fields/__init__.py)."""
