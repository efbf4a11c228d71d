"""Score-distillation guidance: ``sds`` (SDS with CFG, w(t), t range), ``prompts`` (view-dependent prompts).

Import the modules by name; this file imports nothing (see distill3d/fields/__init__.py)."""
