"""Reports of heads: metrics (JSON-ready dicts), tables (markdown, CSV, run reports) and plots (PNG)."""

from bottleneck.report.metrics import classification_metrics
from bottleneck.report.plots import plot_comparison, plot_confusion, plot_history
from bottleneck.report.tables import csv_text, markdown_table, markdown_text, mean_std, render_report

__all__ = [
    "classification_metrics",
    "csv_text",
    "markdown_table",
    "markdown_text",
    "mean_std",
    "plot_comparison",
    "plot_confusion",
    "plot_history",
    "render_report",
]
