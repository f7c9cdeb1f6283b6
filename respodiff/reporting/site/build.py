"""Build the static report site: an index and one page per reproduction table that has results.

    <site>/index.html
    <site>/style.css
    <site>/thumbs/<sha256>.png            thumbnails, shared by every page (respodiff/reporting/site/thumbs.py)
    <site>/<table>/index.html             the table, plots, image grids, runs and evaluator cards
    <site>/<table>/plots/*.png
    <site>/<table>/runs/*.json            each result's full record (config, versions, evaluator, metrics)
    <site>/<table>/grids.json             what the grids show, reused when the images are not on this machine

Pages are Jinja2 templates shipped with the package; the table is the same Markdown `make paper-tables` writes
(respodiff/reporting/tables.py) turned into HTML. Everything links relatively, so the site works from file://.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from respodiff.io import write_text_atomically
from respodiff.reporting.selection import select, split_results
from respodiff.reporting.site.cards import build_card, card_file_name, card_json
from respodiff.reporting.site.curves import CURVES, curve_plot_for_rows
from respodiff.reporting.site.image_grids import GRIDS_FILE, href, page_grids
from respodiff.reporting.site.sources import display_path, has_grids
from respodiff.reporting.site.thumbs import Thumbnails
from respodiff.reporting.specs import load_specs
from respodiff.reporting.store import load_results
from respodiff.reporting.tables import build_table, render_markdown

log = logging.getLogger(__name__)

_DETAIL_HEADS = (("Notes:", "Notes"), ("Warnings (", "Warnings"), ("Runs:", "Runs behind the cells"))


@dataclass
class Page:
    name: str
    title: str
    source: str
    filled: int
    runnable: int
    warnings: int
    href: str = ""
    sections: list = field(default_factory=list)

    @property
    def grids(self) -> str:
        shown = sum(len(s["groups"]) for s in self.sections)
        if not self.sections:
            return "–"
        return f"{shown} grid(s)" if shown else "images not found locally"


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("respodiff.reporting.site", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def _markdown_html(text: str):
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    # html=False: a note or warning that contains "<" is shown, never interpreted.
    return Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))


def table_blocks(markdown: str):
    """The table's Markdown as HTML: the head (source, legend, table) and the long lists as collapsible blocks."""
    head, blocks, current = [], [], None
    for line in markdown.splitlines()[1:]:  # the "# title" line: the page has its own heading
        start = next((summary for prefix, summary in _DETAIL_HEADS if line.startswith(prefix)), None)
        if start is not None:
            current = {"summary": line.rstrip(":") if start == "Warnings" else start, "lines": []}
            blocks.append(current)
            continue
        (current["lines"] if current else head).append(line)
    return _markdown_html("\n".join(head)), [{"summary": b["summary"], "html": _markdown_html("\n".join(b["lines"]))}
                                             for b in blocks]


def _cards(table, refs) -> list:
    rows_of: dict = {}
    for row in table.rows:
        if row.paper_only:
            continue
        for bench in dict.fromkeys(c.benchmark for c in table.spec.columns):
            col = next(c for c in table.spec.columns if c.benchmark == bench)
            chosen, found = select(refs, {**row.match, **col.match}, bench)
            for ref in (found if row.seeds else [chosen] if chosen else []):
                rows_of.setdefault((ref.run_id, bench), (ref, []))[1].append(row.label)
    cards = []
    for (_, _), (ref, labels) in sorted(rows_of.items()):
        card = build_card(ref, list(dict.fromkeys(labels)))
        card.file = href(card_file_name(card))
        cards.append(card)
    return cards


def _group_bars(table, refs, page_dir: Path) -> list[dict]:
    """Per-profession / per-category bars of each grid benchmark's first metric, unless the spec draws its own."""
    from respodiff.reporting.plots import group_bars_plot

    drawn = {(p.options.get("benchmark"), p.options.get("metric")) for p in table.spec.plots if p.kind == "group_bars"}
    plots = []
    for bench in dict.fromkeys(c.benchmark for c in table.spec.columns if has_grids(c.benchmark)):
        col = next(c for c in table.spec.columns if c.benchmark == bench)
        if (bench, col.metric) in drawn:
            continue
        series: dict[str, dict[str, float]] = {}
        for row in table.rows:
            chosen = None if row.paper_only or row.seeds else select(refs, {**row.match, **col.match}, bench)[0]
            if chosen is None:
                continue
            hits = chosen.rows[(chosen.rows["metric"] == col.metric) & ~chosen.rows["group"].str.contains(";")]
            for group, value in zip(hits["group"], hits["value"]):
                key, _, name = str(group).partition("=")
                if key in ("profession", "category") and value == value:
                    series.setdefault(row.label, {})[name] = float(value)
        if series:
            name = f"{bench}_{col.metric}_per_group.png"
            title = f"{col.label} per {'profession' if bench.startswith('winobias') else 'category'} ({bench})"
            group_bars_plot(series, page_dir / "plots" / name, ylabel=col.label, title=title)
            plots.append({"href": href(f"plots/{name}"), "caption": title})
    return plots


def _plots(table, refs, page_dir: Path) -> list[dict]:
    from respodiff.reporting.plots import render_spec_plots

    written = render_spec_plots(table, refs, page_dir / "plots")
    captions = {p.name: p.title or p.name for p in table.spec.plots}
    plots = [{"href": href(f"plots/{p.name}"), "caption": captions.get(p.stem, p.stem)} for p in written]
    plots += _group_bars(table, refs, page_dir)
    for bench in dict.fromkeys(c.benchmark for c in table.spec.columns if c.benchmark in CURVES):
        rows = []
        for row in table.rows:
            chosen = None if row.paper_only or row.seeds else select(refs, row.match, bench)[0]
            if chosen is not None:
                rows.append((row.label, chosen))
        title = f"{bench}: rate vs detector threshold (re-scored from stored per-image scores)"
        out = curve_plot_for_rows(rows, bench, page_dir / "plots" / f"{bench}_threshold_curve.png", title)
        if out is not None:
            plots.append({"href": href(f"plots/{out.name}"), "caption": title})
    return plots


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def build_site(results, specs_dir: str | os.PathLike, out_dir: str | os.PathLike, outputs=(), *, n_columns: int = 6,
               thumb_px: int = 128, self_contained: bool | None = None, logger=None) -> Path:
    """Write the site into `out_dir` and return its index page.

    `results`: results folders or JSON files (load_results); `outputs`: roots holding run folders with image stores.
    `self_contained` (default: the site lies outside every outputs root) keeps every link inside the site, so a
    committed site has no link into an uncommitted outputs folder. `logger`: a W&B logger (wandb_logger) that gets
    the same grids as image panels and one table row per image.
    """
    site = Path(out_dir)
    outputs = [Path(o) for o in outputs if Path(o).is_dir()]
    if self_contained is None:
        self_contained = not any(_inside(site, o) for o in outputs)
    existing = [r for r in ([results] if isinstance(results, (str, os.PathLike)) else results) if Path(r).exists()]
    refs = split_results(load_results(existing))
    thumbs = Thumbnails(site, thumb_px)
    env = _environment()
    pages, empty = [], []
    for spec in load_specs(specs_dir):
        table = build_table(spec, refs)
        runnable = sum(not r.paper_only for r in table.rows) * len(spec.columns)
        page = Page(spec.name, spec.title, spec.source, table.filled, runnable, len(table.warnings))
        if not table.filled:
            empty.append(spec.title)
            continue
        page_dir = site / spec.name
        for generated in ("plots", "runs"):  # wholly generated: nothing stale may survive a rebuild
            shutil.rmtree(page_dir / generated, ignore_errors=True)
        plots = _plots(table, refs, page_dir)
        page.sections = page_grids(table, refs, outputs, thumbs, page_dir, site, n_columns, self_contained)
        cards = _cards(table, refs)
        for card in cards:
            write_text_atomically(page_dir / card_file_name(card), card_json(card))
        table_html, details = table_blocks(render_markdown(table))
        html = env.get_template("experiment.html").render(
            root="../", name=spec.name, title=spec.title, table_html=table_html, table_details=details, plots=plots,
            sections=page.sections, cards=cards, outputs=[display_path(o) for o in outputs])
        write_text_atomically(page_dir / "index.html", html)
        page.href = href(f"{spec.name}/index.html")
        pages.append(page)
    current = {page.name for page in pages}
    for folder in (site.iterdir() if site.is_dir() else ()):
        # A page an earlier build made for a table that has no results now (or no longer exists).
        if folder.is_dir() and folder.name not in current and (folder / GRIDS_FILE).is_file():
            shutil.rmtree(folder)
    index = site / "index.html"
    write_text_atomically(index, env.get_template("index.html").render(
        root="", pages=pages, empty=empty, specs_dir=display_path(specs_dir),
        results=[display_path(r) for r in existing] or ["(none found)"]))
    from importlib.resources import files

    write_text_atomically(site / "style.css", files("respodiff.reporting.site").joinpath("static/style.css").read_text())
    removed = thumbs.prune()
    log.info("site %s: %d page(s), %d new thumbnail(s), %d unused removed", site, len(pages), thumbs.made, removed)
    if logger is not None:
        from respodiff.reporting.site.wandb_panels import log_pages

        log_pages(logger, pages, site)
    return index
