"""The metrics table of the comparison report: which metrics, how to read them from a metrics dict, how to print."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distill3d.nested import lookup

# (column header, dotted path into the dict of ``metrics.suite.evaluate_asset``, better: "high" / "low" / "zero").
# Geometry first: silhouette IoU over every view (ring + top + bottom, the headline), volumetric IoU of the solid,
# Chamfer, then colour, surface normals (degrees) and the rest; the ring-only IoU is kept as a secondary column.
METRIC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("IoU all views", "iou_all_views", "high"),
    ("vol. IoU", "volume.iou", "high"),
    ("Chamfer", "chamfer.chamfer", "low"),
    ("ΔE Lab", "colour_error_lab", "low"),
    ("colour", "colour_name", ""),
    ("normal err °", "normals.error_deg", "low"),
    ("roughness °", "normals.roughness_deg", "low"),
    ("IoU ring", "iou_ring_mean", "high"),
    ("depth err", "depth_error", "low"),
    ("Janus back", "janus.rate_back", "low"),
    ("Janus side", "janus.rate_side", "low"),
    ("saturation", "saturation.mean", ""),
    ("sat. excess", "saturation.excess", "zero"),
    ("stripe energy", "sharpness.stripe_energy_ratio", "high"),
    ("PSNR", "sharpness.psnr", "high"),
    ("CLIP R-prec.", "clip_r_precision.r_precision", "high"),
)
MISSING = "–"
# The headline numbers a summary of many assets averages: (summary key, metrics path, label).
HEADLINE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("iou_all_views", "iou_all_views", "all-view IoU"), ("volume_iou", "volume.iou", "volumetric IoU"),
    ("chamfer", "chamfer.chamfer", "Chamfer"), ("colour_error_lab", "colour_error_lab", "colour error"),
    ("normal_error_deg", "normals.error_deg", "normal error (deg)"),
    ("roughness_deg", "normals.roughness_deg", "roughness (deg)"),
)


def format_value(value: Any) -> str:
    """Table text of a metric: floats to 3 significant digits, bools yes/no, None as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def row_values(metrics: Mapping[str, Any] | None) -> list[str]:
    """Formatted values of ``METRIC_COLUMNS`` for one metrics dict (a skipped CLIP shows 'skipped')."""
    out = []
    for _, path, _ in METRIC_COLUMNS:
        value = lookup(metrics, path)
        if value is None and path.startswith("clip_r_precision") and lookup(metrics, "clip_r_precision.skipped"):
            out.append("skipped")
        else:
            out.append(format_value(value))
    return out


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table ('|' in cells escaped)."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
