"""Comparison reports: offline HTML + Markdown with turntables and metrics, and the guidance-scale sweep figure."""

from distill3d.report.html import write_report
from distill3d.report.sweep import sweep_figure, sweep_grid, sweep_plot
from distill3d.report.table import METRIC_COLUMNS

__all__ = ["METRIC_COLUMNS", "sweep_figure", "sweep_grid", "sweep_plot", "write_report"]
