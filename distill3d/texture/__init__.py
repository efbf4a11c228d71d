"""TextMesh's texture side as library code: ``canonical`` (canonical views, 2x2 tiles), ``pseudo_gt`` (img2img
pseudo ground truth through any prior), ``finetune`` (MSE + lambda_sds SDS on a fixed mesh), ``render``.

Import the modules by name; this file imports nothing (see distill3d/fields/__init__.py)."""
