"""Neural fields: ``encoding`` (multi-resolution hash grid in torch), ``nerf`` (density + albedo field),
``sdf`` (SDF field with VolSDF density), ``sdf_init`` (SDF from a mesh via pysdf), ``loading`` (load any saved field).

Package modules are imported by name (``from distill3d.fields.nerf import RadianceField``): this file imports
nothing, so a stage's code version (stages/core/code.py) holds only the modules it really uses."""
