"""Figures and the HTML report."""

from vcex.report.html import metrics_table, result_grid, write_report
from vcex.report.images import grid_image, save_png, signed_difference

__all__ = ["grid_image", "metrics_table", "result_grid", "save_png", "signed_difference", "write_report"]
