"""Reporting: results store, paper tables (md/tex), plots, image grids and the W&B logger.

Light to import (pandas, yaml); matplotlib and wandb load only when a plot, grid or logger is made.
"""

from respodiff.reporting.catalog import SpecError
from respodiff.reporting.report import report_run
from respodiff.reporting.store import ResultsError, collect_results, load_results, write_result
from respodiff.reporting.tables import render_tables
from respodiff.reporting.wandb_logger import NullLogger, log_result, make_logger

__all__ = [
    "NullLogger", "ResultsError", "SpecError", "collect_results", "load_results", "log_result", "make_logger",
    "render_tables", "report_run", "write_result",
]
