"""Rendering of built tables (tables.py) to Markdown and LaTeX: cells, notes, warnings and the runs behind them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from respodiff.reporting import seeds
from respodiff.reporting.specs import PAIRED_SUFFIX

if TYPE_CHECKING:
    from respodiff.reporting.tables import Cell, Table

DASH = "–"
_ARROW_MD = {True: "↑", False: "↓"}
_ARROW_TEX = {True: r"$\uparrow$", False: r"$\downarrow$"}


def _fmt_value(v: float, digits: int) -> str:
    return f"{v:.{digits}f}"


def _cell_text(cell: Cell, digits: int, latex: bool) -> str:
    if cell.value is None:
        ours = "--" if latex else DASH
    else:
        ours = _fmt_value(cell.value, digits)
        if cell.sd is not None:
            ours += rf" $\pm$ {_fmt_value(cell.sd, digits)}" if latex else f" ± {_fmt_value(cell.sd, digits)}"
        elif cell.ci_low is not None and cell.ci_high is not None:
            ci = f"[{_fmt_value(cell.ci_low, digits)}, {_fmt_value(cell.ci_high, digits)}]"
            ours += rf" {{\scriptsize {ci}}}" if latex else f" {ci}"
        if cell.per_seed is not None and cell.seeds_asked and len(cell.per_seed) < cell.seeds_asked:
            ours += f" ({len(cell.per_seed)} of {cell.seeds_asked} seeds)"
        if cell.marked:
            ours += "$^*$" if latex else "*"
    if cell.paper is not None:
        paper = _fmt_value(cell.paper, digits)
        ours += f" ({paper})" if latex else f" (paper {paper})"
    return ours


def _grid(table: Table, latex: bool) -> tuple[list[str], list[list[str]]]:
    """Header and body cells (label-escaped by the caller), rows = spec rows unless the spec is transposed."""
    spec = table.spec
    arrows = _ARROW_TEX if latex else _ARROW_MD
    esc = _tex_escape if latex else _md_escape
    col_heads = [f"{esc(c.label)} {arrows[c.higher_is_better]}" for c in spec.columns]
    if not spec.transpose:
        header = [esc(spec.row_header), *col_heads]
        body = [[esc(r.label), *(_cell_text(table.cell(r.label, c.id), c.digits, latex) for c in spec.columns)]
                for r in table.rows]
    else:
        header = [esc(spec.row_header), *(esc(r.label) for r in table.rows)]
        body = [[head, *(_cell_text(table.cell(r.label, c.id), c.digits, latex) for r in table.rows)]
                for c, head in zip(spec.columns, col_heads)]
    return header, body


def worse_notes(table: Table) -> list[str]:
    """Each `worse_note` column's note, naming the rows whose paired difference is marked on the worse side (a
    column no row measured adds nothing)."""
    notes = []
    for col in table.spec.columns:
        if not col.worse_note:
            continue
        measured = [(row.label, table.cell(row.label, col.id)) for row in table.rows]
        measured = [(label, cell) for label, cell in measured if cell.value is not None]
        if not measured:
            continue
        worse = [label for label, cell in measured
                 if cell.marked and (cell.value < 0 if col.higher_is_better else cell.value > 0)]
        notes.append(f"{col.worse_note}: {', '.join(worse) if worse else 'none of the rows measured'}.")
    return notes


def _paper_only_note(table: Table) -> str | None:
    labels = [r.label for r in table.rows if r.paper_only]
    if not labels:
        return None
    return f"Paper-only rows (baselines not run by this project): {', '.join(labels)}."


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")


def render_markdown(table: Table) -> str:
    spec = table.spec
    header, body = _grid(table, latex=False)
    lines = [f"# {spec.title}", ""]
    if spec.source:
        lines += [f"Source: {spec.source}", ""]
    lines += ["Cells: ours [CI] (paper). ↓ lower is better, ↑ higher is better; – no result.", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in body]
    notes = [*spec.notes, *(f"{r.label}: {r.note}" for r in table.rows if r.note)]
    # A seeds row's cell reads "mean ± sd" over training seeds; each seed's value is listed here.
    notes += [seeds.per_seed_note(r.label, c.label, table.cell(r.label, c.id).per_seed, c.digits)
              for r in table.rows for c in spec.columns if table.cell(r.label, c.id).per_seed]
    references = [r.label for r in table.rows if r.reference]
    if references and any(c.benchmark.endswith(PAIRED_SUFFIX) for c in spec.columns):
        notes.append(f"Paired columns (Δ, leakage) compare each row with {', '.join(references)} on the same prompts "
                     "and image seeds; its own cells there are blank.")
    if any(cell.marked for cell in table.cells.values()):
        notes.append("*: a paired difference from the base model (same prompts and image seeds) whose 95% interval "
                     "excludes 0.")
    notes += worse_notes(table)
    po = _paper_only_note(table)
    if po:
        notes.append(po)
    if notes:
        lines += ["", "Notes:", *(f"- {_md_escape(n)}" for n in notes)]
    if table.warnings:
        lines += ["", f"Warnings ({len(table.warnings)}):", *(f"- {_md_escape(w)}" for w in table.warnings)]
    if table.runs:
        lines += ["", "Runs:", *(f"- {_md_escape(label)}: {'; '.join(v)}" for label, v in table.runs.items())]
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                "λ": r"$\lambda$", "–": "--", "→": r"$\rightarrow$", "×": r"$\times$"}


def _tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def render_latex(table: Table) -> str:
    spec = table.spec
    header, body = _grid(table, latex=True)
    caption = spec.caption or spec.title
    lines = [
        f"% Generated by respodiff.reporting.tables from {Path(spec.path).name or spec.name}; do not edit.",
        "% Needs \\usepackage{booktabs}.",
    ]
    lines += [f"% WARNING: {w}" for w in table.warnings]
    lines += [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_tex_escape(caption)}. Ours [CI] (paper).}}",
        rf"\label{{tab:{spec.name}}}",
        r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
        *(" & ".join(r) + r" \\" for r in body),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    po = _paper_only_note(table)
    if po:
        lines.append(f"% {po}")
    return "\n".join(lines) + "\n"
