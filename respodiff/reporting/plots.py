"""Figures: the lambda trade-off curve and grouped bars (per-profession DevRat, I2P per category).

The plotting functions take plain data so they can be tested and reused; `render_spec_plots` feeds them from a
resolved table (see the `plots:` block of a reproduction spec). Agg backend: no display is ever needed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)

from respodiff.io import replace_atomically
from respodiff.reporting.selection import ResultRef, select  # noqa: E402
from respodiff.reporting.specs import PlotSpec  # noqa: E402

log = logging.getLogger(__name__)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        replace_atomically(path, lambda handle: fig.savefig(handle, format="png", dpi=150, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return path


def _axis_label(label: str, higher_is_better: bool | None) -> str:
    if higher_is_better is None:
        return label
    return f"{label} ({'higher' if higher_is_better else 'lower'} is better)"


def tradeoff_plot(ours: list[tuple[str, float, float]], path: str | os.PathLike, *, xlabel: str, ylabel: str,
                  paper: list[tuple[str, float, float]] = (), title: str = "",
                  x_higher_is_better: bool | None = None, y_higher_is_better: bool | None = None) -> Path:
    """Points (label, x, y) joined in the given order (e.g. increasing lambda), paper points overlaid."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    if ours:
        xs, ys = [p[1] for p in ours], [p[2] for p in ours]
        ax.plot(xs, ys, "-o", color="tab:blue", label="ours", zorder=3)
        for label, x, y in ours:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8, color="tab:blue")
    if paper:
        xs, ys = [p[1] for p in paper], [p[2] for p in paper]
        ax.plot(xs, ys, "s--", color="tab:gray", mfc="none", label="paper", zorder=2)
        for label, x, y in paper:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, -10), fontsize=8, color="tab:gray")
    ax.set_xlabel(_axis_label(xlabel, x_higher_is_better))
    ax.set_ylabel(_axis_label(ylabel, y_higher_is_better))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return _save(fig, path)


def group_bars_plot(series: dict[str, dict[str, float]], path: str | os.PathLike, *, ylabel: str,
                    paper: dict[str, dict[str, float]] | None = None, title: str = "",
                    groups: list[str] | None = None) -> Path:
    """Grouped bars: one group per key (profession, category), one bar per series (method); paper as diamonds."""
    paper = paper or {}
    if groups is None:
        groups = sorted({g for s in series.values() for g in s} | {g for s in paper.values() for g in s})
    labels = list(dict.fromkeys([*series, *paper]))
    n = max(len(labels), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(groups) * max(n, 2) / 2 + 2), 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, label in enumerate(labels):
        offset = (i - (n - 1) / 2) * width
        color = colors[i % len(colors)]
        values = series.get(label, {})
        xs = [j + offset for j, g in enumerate(groups) if g in values]
        if xs:
            ax.bar(xs, [values[g] for g in groups if g in values], width=width, color=color, label=label)
        pvals = paper.get(label, {})
        pxs = [j + offset for j, g in enumerate(groups) if g in pvals]
        if pxs:
            ax.scatter(pxs, [pvals[g] for g in groups if g in pvals], marker="D", s=28, color=color,
                       edgecolors="black", linewidths=0.8, zorder=4, label=f"{label} (paper)")
    ax.set_xticks(range(len(groups)))
    crowded = len(groups) > 5 or max((len(g) for g in groups), default=0) > 10
    ax.set_xticklabels(groups, rotation=45 if crowded else 0, ha="right" if crowded else "center")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def threshold_curve_plot(curve, path: str | os.PathLike, *, xlabel: str, ylabel: str, title: str = "") -> Path:
    """Rate against detector threshold, one line (with its interval band) per run: `curve` has the columns run,
    threshold, value, ci_low, ci_high (respodiff/evaluation/rescore.py: threshold_curve)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for run, part in curve.groupby("run", sort=False):
        part = part.sort_values("threshold")
        ax.plot(part["threshold"], part["value"], marker="o", ms=3, label=str(run))
        if part["ci_low"].notna().all():
            ax.fill_between(part["threshold"], part["ci_low"], part["ci_high"], alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _tradeoff_from_table(table, plot: PlotSpec, path: Path) -> Path | None:
    spec = table.spec
    xcol, ycol = spec.column(plot.options["x"]), spec.column(plot.options["y"])
    ours, paper = [], []
    for row in table.rows:
        cx, cy = table.cell(row.label, xcol.id), table.cell(row.label, ycol.id)
        if cx.value is not None and cy.value is not None:
            ours.append((row.label, cx.value, cy.value))
        if cx.paper is not None and cy.paper is not None:
            paper.append((row.label, cx.paper, cy.paper))
    if not ours:
        log.info("%s: no row has both %s and %s; plot %s skipped", spec.name, xcol.id, ycol.id, plot.name)
        return None
    return tradeoff_plot(ours, path, xlabel=xcol.label, ylabel=ycol.label, paper=paper, title=plot.title or spec.title,
                         x_higher_is_better=xcol.higher_is_better, y_higher_is_better=ycol.higher_is_better)


def _group_bars_from_table(table, refs: list[ResultRef], plot: PlotSpec, path: Path) -> Path | None:
    spec, opts = table.spec, plot.options
    bench, metric, gkey = opts["benchmark"], opts["metric"], opts["group_key"]
    wanted = opts.get("rows")
    series: dict[str, dict[str, float]] = {}
    paper: dict[str, dict[str, float]] = {}
    prefix = f"{gkey}="
    for row in table.rows:
        if wanted and row.label not in wanted:
            continue
        for col in spec.columns:  # paper numbers of this metric's per-group columns
            if col.benchmark == bench and col.metric == metric and col.group and gkey in col.group:
                if col.id in row.paper:
                    paper.setdefault(row.label, {})[str(col.group[gkey]).casefold()] = row.paper[col.id]
        if row.paper_only:
            continue
        ref, _ = select(refs, row.match, bench)
        if ref is None:
            continue
        hits = ref.rows[(ref.rows["metric"] == metric) & ref.rows["group"].str.startswith(prefix)
                        & ~ref.rows["group"].str.contains(";")]
        values = {g[len(prefix):].casefold(): float(v) for g, v in zip(hits["group"], hits["value"]) if v == v}
        if values:
            series[row.label] = values
    if not series:
        log.info("%s: no per-%s %s results; plot %s skipped", spec.name, gkey, metric, plot.name)
        return None
    from respodiff.reporting.catalog import metric_info

    info = metric_info(bench, metric)
    return group_bars_plot(series, path, ylabel=_axis_label(info.label, info.higher_is_better), paper=paper,
                           title=plot.title or spec.title)


def render_spec_plots(table, refs: list[ResultRef], plots_dir: str | os.PathLike) -> list[Path]:
    """Render the `plots:` of a resolved table into `<plots_dir>/<plot name>.png`; plots without data are skipped."""
    written = []
    for plot in table.spec.plots:
        path = Path(plots_dir) / f"{plot.name}.png"
        if plot.kind == "tradeoff":
            out = _tradeoff_from_table(table, plot, path)
        else:
            out = _group_bars_from_table(table, refs, plot, path)
        if out is not None:
            log.info("wrote %s", out)
            written.append(out)
    return written
