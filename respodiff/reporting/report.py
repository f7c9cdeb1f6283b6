"""The per-run report stage: what `run.py ... stage=report` calls after evaluation.

It reads the run's own results JSONs, writes a short human summary beside them and mirrors them to the logger.
Cross-run tables (paper tables, sweeps) are built later from the collected results (`make paper-tables`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from respodiff.io import write_text_atomically
from respodiff.reporting.store import ResultsError, find_result_files, load_results, read_result
from respodiff.reporting.wandb_logger import log_result, make_logger

log = logging.getLogger(__name__)


def _fmt(v) -> str:
    return "–" if v is None or pd.isna(v) else f"{v:.4g}"


def summary_markdown(df: pd.DataFrame, title: str) -> str:
    """Overall (ungrouped) metrics of a run; grouped values are counted, not listed (they live in the JSONs)."""
    lines = [f"# {title}", "", "| benchmark | metric | value | CI | n | per-group values |", "|---|---|---:|---|---:|---:|"]
    for (bench, metric), rows in df.groupby(["benchmark", "metric"], sort=True):
        overall = rows[rows["group"] == ""]
        n_groups = int((rows["group"] != "").sum())
        if overall.empty:
            lines.append(f"| {bench} | {metric} | – | | | {n_groups} |")
            continue
        r = overall.iloc[-1]
        ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if not pd.isna(r["ci_low"]) else ""
        n = "" if pd.isna(r["n"]) else str(int(r["n"]))
        lines.append(f"| {bench} | {metric} | {_fmt(r['value'])} | {ci} | {n} | {n_groups} |")
    return "\n".join(lines) + "\n"


def report_run(run_dir: str | os.PathLike, cfg: dict | None = None, *, group: str = "", name: str = "",
               logger=None) -> pd.DataFrame:
    """Summarise and log one run's results (`<run_dir>/results/*.json`); returns them as load_results rows.

    Pass an open logger to reuse the run's W&B run (training curves and metrics in one place); otherwise one is
    made from `cfg` and finished here.
    """
    results_dir = Path(run_dir) / "results"
    files = find_result_files(results_dir) if results_dir.is_dir() else []
    if not files:
        raise ResultsError(f"no results in {results_dir}: run the evaluate stage first")
    df = load_results(files)
    results = [read_result(f) for f in files]
    title = f"{group or df['experiment'].iloc[0]} / {name or df['run_name'].iloc[0] or 'default'}"
    summary = summary_markdown(df, title)
    # Evaluator warnings (e.g. tiny stand-ins: numbers are meaningless) belong beside the numbers they qualify.
    warnings = sorted({str(w) for r in results if (w := (r.get("evaluator") or {}).get("warning"))})
    for warning in warnings:
        log.warning("%s: %s", results_dir, warning)
    if warnings:
        summary += "\n" + "".join(f"> **Warning:** {w}\n" for w in warnings)
    write_text_atomically(results_dir / "summary.md", summary)
    own = logger is None
    logger = logger if logger is not None else make_logger(cfg, run_dir, group, name)
    try:
        for result in results:
            log_result(logger, result)
    finally:
        if own:
            logger.finish()
    return df
