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


# ---------------------------------------------------------------------------------------------------------------
# The demo's report (`make demo`): everything under the outputs folder, the committed results only read.

CPU_NOTE = ("Numbers vary slightly across CPUs: floating-point sums run in a different order on other processors "
            "and thread counts, so a rerun elsewhere can move a cell in its second or third digit (a DevRat of 0.219 "
            "on one machine read 0.231 on another, results/LOG.md). The committed numbers are the reference; a "
            "difference far outside the intervals is worth a look.")


def demo_paths(outputs_root: str | os.PathLike) -> dict[str, Path]:
    """Where a local report goes: `<outputs>/report/{runs,tables,plots,site}` (never a tracked folder)."""
    base = Path(outputs_root) / "report"
    return {"runs": base / "runs", "tables": base / "tables", "plots": base / "plots", "site": base / "site"}


def _number(cell, digits: int) -> str:
    return "–" if cell is None or cell.value is None else f"{cell.value:.{digits}f}"


def comparison_markdown(ours, reference) -> str:
    """Our filled rows beside the reference's values, cell by cell: "ours / reference" (same spec, two tables)."""
    spec = ours.spec
    # A row over training seeds that the demo filled with fewer seeds is not the committed row's mean: left out.
    rows = [r for r in ours.rows if any(ours.cell(r.label, c.id).value is not None for c in spec.columns)
            and not (r.seeds and any(len(ours.cell(r.label, c.id).per_seed or {}) < len(r.seeds)
                                     for c in spec.columns if ours.cell(r.label, c.id).value is not None))]
    cols = [c for c in spec.columns if any(ours.cell(r.label, c.id).value is not None for r in rows)]
    ref_cells = reference.cells if reference is not None else {}
    arrows = {True: "↑", False: "↓"}
    lines = ["| " + " | ".join([spec.row_header, *(f"{c.label} {arrows[c.higher_is_better]}" for c in cols)]) + " |",
             "|" + "|".join(["---"] + [":---:"] * len(cols)) + "|"]
    for row in rows:
        cells = [f"{_number(ours.cell(row.label, c.id), c.digits)} / "
                 f"{_number(ref_cells.get((row.label, c.id)), c.digits)}" for c in cols]
        lines.append("| " + " | ".join([row.label, *cells]) + " |")
    return "\n".join(lines)
