"""Meshes: ``types`` (``TexturedMesh``), ``rasterize`` (torch rasteriser), ``render`` (render a mesh), ``extract``
(marching cubes), ``level`` (automatic density level), ``uv`` (xatlas unwrap + bake), ``gltf`` (GLB I/O).
Differentiable geometry (Magic3D's refine stage): ``antialias`` (silhouette gradients), ``topology`` (edges and
adjacent faces), ``surface`` (render an optimised mesh, shaded), ``regularizers`` (normal consistency, Laplacian),
``tetra`` (tet grid), ``marching_tets``, ``dmtet_init`` (grid and SDF from a coarse field) and ``dmtet``
(``DMTetScene``); ``nvdiff`` (optional nvdiffrast visibility on CUDA).

Import the modules by name; this file imports nothing (see distill3d/fields/__init__.py)."""
