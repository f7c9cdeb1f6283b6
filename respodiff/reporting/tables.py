"""Paper tables: each reproduction spec rendered to Markdown and LaTeX, our number beside the paper's.

A cell reads "0.14 [0.12, 0.16] (paper 0.14)" (table_render.py writes it). A cell without a result is a dash, never a zero, and every such
dash has a warning (logged, and listed under the table) that says which run was looked for and what was found
instead. Paper-only rows (baselines this project does not run) show only the paper's number and one note.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from respodiff.io import write_text_atomically
from respodiff.reporting import seeds
from respodiff.reporting.selection import ResultRef, describe_match, matches, select, split_results
from respodiff.reporting.specs import PAIRED_SUFFIX, ColumnSpec, RowSpec, TableSpec, load_specs
from respodiff.reporting.store import group_key, load_results
from respodiff.reporting.table_render import render_latex, render_markdown

log = logging.getLogger(__name__)

DIFF_SUFFIX = "_diff"  # metrics named so are paired differences (respodiff/evaluation/compare.py)


@dataclass
class Cell:
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    paper: float | None = None
    run_id: str | None = None
    sd: float | None = None  # over training seeds (a `seeds` row)
    per_seed: dict[int, float] | None = None
    seeds_asked: int | None = None  # how many seeds the row names (fewer in per_seed: the cell says so)
    marked: bool = False  # a paired difference whose interval excludes 0


@dataclass
class Table:
    spec: TableSpec
    rows: list[RowSpec]
    cells: dict[tuple[str, str], Cell]
    warnings: list[str] = field(default_factory=list)
    runs: dict[str, list[str]] = field(default_factory=dict)  # row label -> provenance lines

    def cell(self, row: str, col: str) -> Cell:
        return self.cells[(row, col)]

    @property
    def filled(self) -> int:
        return sum(c.value is not None for c in self.cells.values())


def _finite(x) -> float | None:
    if x is None or x is pd.NA:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _sweep_label(template: str, value: float) -> str:
    return template.format(value=f"{value:g}")


def sweep_rows(spec: TableSpec, refs: list[ResultRef]) -> list[RowSpec]:
    """One row per parameter value: the declared values (with paper numbers) plus any value found among the runs."""
    sweep = spec.sweep
    if sweep is None:
        return []
    allowed = list(dict.fromkeys([*sweep.match.get("only_override_keys", []), sweep.param]))
    base = {**sweep.match, "only_override_keys": allowed}
    values = set(sweep.values)
    probe = {k: v for k, v in base.items() if k != "config"}
    for ref in refs:
        if matches(ref, probe):
            value = ref.param(sweep.param)
            if isinstance(value, float):
                values.add(value)
    rows = []
    for value in sorted(values):
        info = sweep.values.get(value, {})
        label = info.get("label") or _sweep_label(sweep.label, value)
        config = {**sweep.match.get("config", {}), sweep.param: value}
        rows.append(RowSpec(str(label), {**base, "config": config}, info.get("paper", {}), False,
                            info.get("note", ""), sweep_value=value))
    return rows


def _metric_row(ref: ResultRef, col: ColumnSpec) -> pd.Series | None:
    want_group = group_key(col.group).casefold()
    hits = ref.rows[(ref.rows["metric"] == col.metric) & (ref.rows["group"].str.casefold() == want_group)]
    return None if hits.empty else hits.iloc[-1]


def _value_cell(cell: Cell, col: ColumnSpec, ref: ResultRef, where: str, warnings: list[str]) -> bool:
    """Fill the cell from the chosen result; False (with a warning) when the result lacks the value."""
    hit = _metric_row(ref, col)
    gname = f"[{group_key(col.group)}]" if col.group else ""
    if hit is None:
        warnings.append(f"{where}: run {ref.run_id} has no {col.benchmark}/{col.metric}{gname} value")
        return False
    value = _finite(hit["value"])
    if value is None:
        warnings.append(f"{where}: run {ref.run_id} recorded {col.metric}{gname} as null")
        return False
    cell.value, cell.run_id = value, ref.run_id
    cell.ci_low, cell.ci_high = _finite(hit["ci_low"]), _finite(hit["ci_high"])
    cell.n = None if pd.isna(hit["n"]) else int(hit["n"])
    cell.marked = (col.metric.endswith(DIFF_SUFFIX) and cell.ci_low is not None and cell.ci_high is not None
                   and (cell.ci_low > 0 or cell.ci_high < 0))
    hib = hit["higher_is_better"]
    if not pd.isna(hib) and bool(hib) != col.higher_is_better:
        warnings.append(f"{where}: run {ref.run_id} says higher_is_better={bool(hib)} for {col.metric}, "
                        f"the catalogue says {col.higher_is_better}")
    return True


def _disagree(found: list[ResultRef], cols: list[ColumnSpec]) -> bool:
    for col in cols:
        values = set()
        for ref in found:
            hit = _metric_row(ref, col)
            v = None if hit is None else _finite(hit["value"])
            values.add(None if v is None else round(v, 9))
        if len(values) > 1:
            return True
    return False


def _resolve_row(row: RowSpec, columns: tuple[ColumnSpec, ...], refs: list[ResultRef],
                 warnings: list[str]) -> tuple[dict[str, Cell], set[str]]:
    """The row's cells and the provenance of the results used; one warning per reason a value is absent.

    Columns that share a benchmark and match clause share one run lookup (and one "no run" warning naming them all).
    """
    cells = {c.id: Cell(paper=row.paper.get(c.id)) for c in columns}
    used: set[str] = set()
    if row.paper_only:
        return cells, used
    lookups: dict[str, list[ColumnSpec]] = {}
    for col in columns:
        lookups.setdefault(repr((col.benchmark, sorted(col.match.items(), key=str))), []).append(col)
    for cols in lookups.values():
        bench, match = cols[0].benchmark, {**row.match, **cols[0].match}
        if row.reference and bench.endswith(PAIRED_SUFFIX):
            continue  # a run is not compared with itself
        names = ", ".join(c.label for c in cols)
        chosen, found = select(refs, match, bench)
        if chosen is None:
            # Near misses from the same experiment usually reveal the mismatch (an extra override, a renamed method).
            exp = match.get("experiment")
            same = sorted({r.run_id for r in refs if r.benchmark == bench
                           and (exp is None or r.experiment in (exp if isinstance(exp, list) else [exp]))})
            hint = f"; {bench} results exist for: {', '.join(same[:6])}{' ...' if len(same) > 6 else ''}" if same else ""
            warnings.append(f"{row.label} / {names}: no {bench} result matches {describe_match(match)}{hint}")
            continue
        if row.seeds:
            used |= _seed_cells(row, cols, cells, found, warnings)
            continue
        others = sorted({r.run_id for r in found} - {chosen.run_id})
        if others and _disagree(found, cols):
            # Two runs of one configuration (the default run and its sweep twin) agree and need no warning.
            warnings.append(f"{row.label} / {names}: {len(found)} results with different values match "
                            f"{describe_match(match)}; using the latest, {chosen.run_id} (also: {', '.join(others)})")
        for col in cols:
            if _value_cell(cells[col.id], col, chosen, f"{row.label} / {col.label}", warnings):
                used.add(f"{chosen.run_id} [{bench}] (git {chosen.git_hash[:12] or '?'}, {chosen.created or '?'})")
    return cells, used


def _seed_cells(row: RowSpec, cols: list[ColumnSpec], cells: dict[str, Cell], found: list[ResultRef],
                warnings: list[str]) -> set[str]:
    """Mean +- sd over the row's training seeds, each seed's latest run; a warning names any seed missing. A paired
    difference is marked when every seed's interval excludes 0 on the same side."""
    runs = seeds.latest_per_seed(found, row.seeds)
    missing = [s for s in row.seeds if s not in runs]
    if missing:
        names = ", ".join(c.label for c in cols)
        warnings.append(f"{row.label} / {names}: no {cols[0].benchmark} run for training seed(s) {missing} "
                        f"(of {list(row.seeds)})")
    for col in cols:
        values, sides = {}, set()
        for seed, ref in runs.items():
            probe = Cell()
            if _value_cell(probe, col, ref, f"{row.label} / {col.label}", warnings):
                values[seed] = probe.value
                sides.add(probe.ci_low > 0 if probe.marked else None)
        if values:
            cell = cells[col.id]
            cell.value, cell.sd = seeds.summarise(values)
            cell.per_seed, cell.n, cell.seeds_asked = values, len(values), len(row.seeds)
            cell.marked = len(values) == len(row.seeds) and len(sides) == 1 and None not in sides
    return {f"{ref.run_id} [{ref.benchmark}] (seed {seed}, git {ref.git_hash[:12] or '?'})"
            for seed, ref in runs.items()}


def build_table(spec: TableSpec, results: pd.DataFrame | list[ResultRef] | None) -> Table:
    """Resolve every cell of a spec against loaded results (the DataFrame from load_results)."""
    refs = results if isinstance(results, list) else split_results(results)
    rows = [*spec.rows, *sweep_rows(spec, refs)]
    warnings: list[str] = []
    cells = {}
    runs: dict[str, list[str]] = {}
    for row in rows:
        row_cells, used = _resolve_row(row, spec.columns, refs, warnings)
        cells.update({(row.label, col_id): cell for col_id, cell in row_cells.items()})
        if used:
            runs[row.label] = sorted(used)
    table = Table(spec, rows, cells, warnings, runs)
    for w in warnings:
        log.warning("%s: %s", spec.name, w)
    return table


# ---------------------------------------------------------------------------------------------------- driver


def spec_experiments(spec: TableSpec) -> set[str]:
    """The experiments a spec's match clauses name (to pick the tables a given experiment fills)."""
    clauses = [r.match for r in spec.rows] + [c.match for c in spec.columns]
    if spec.sweep is not None:
        clauses.append(spec.sweep.match)
    names: set[str] = set()
    for clause in clauses:
        exp = clause.get("experiment")
        if exp is not None:
            names.update(map(str, exp if isinstance(exp, list) else [exp]))
    return names


def render_tables(results: str | os.PathLike | list | pd.DataFrame | None, specs_dir: str | os.PathLike,
                  out_dir: str | os.PathLike, plots_dir: str | os.PathLike | None = None) -> dict[str, Table]:
    """Render every spec to `<out_dir>/<spec>.md` and `.tex` (+ plots of specs that have data); returns the tables.

    `results` is a results folder / list of paths (loaded with load_results), an already loaded DataFrame, or None.
    """
    if isinstance(results, pd.DataFrame):
        df = results
    elif results is None:
        df = load_results([])
    else:
        df = load_results(results)
    refs = split_results(df)
    out_dir = Path(out_dir)
    tables: dict[str, Table] = {}
    index = ["# Reproduction tables", "", "| table | cells with our result | warnings |", "|---|:---:|:---:|"]
    for spec in load_specs(specs_dir):
        table = build_table(spec, refs)
        tables[spec.name] = table
        write_text_atomically(out_dir / f"{spec.name}.md", render_markdown(table))
        write_text_atomically(out_dir / f"{spec.name}.tex", render_latex(table))
        runnable = sum(not r.paper_only for r in table.rows) * len(spec.columns)
        index.append(f"| [{spec.title}]({spec.name}.md) | {table.filled}/{runnable} | {len(table.warnings)} |")
        if plots_dir is not None and spec.plots:
            from respodiff.reporting.plots import render_spec_plots

            render_spec_plots(table, refs, plots_dir)
    write_text_atomically(out_dir / "index.md", "\n".join(index) + "\n")
    return tables
