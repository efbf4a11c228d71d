"""The score-distillation optimisation loop shared by methods: ``config`` (``DistillConfig``), ``loop``,
``losses`` (regularisers and the weighting of named loss terms).

Import the modules by name; this file imports nothing (see distill3d/fields/__init__.py)."""
