"""Command line: `python -m respodiff.reporting {collect,tables,demo,site,grid,threshold-curve} ...`
(`make results`, `make paper-tables`, `make demo`, `make report`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from respodiff.errors import RespodiffError


def _default_outputs() -> str:
    return os.environ.get("RESPODIFF_OUTPUTS") or "outputs"


def _collect(args) -> int:
    from respodiff.reporting.store import collect_results

    written = []
    for root in args.outputs_opt or args.outputs:
        if Path(root).exists():
            written += collect_results(root, args.dest, include_stand_ins=args.include_stand_ins)
        else:
            logging.info("%s does not exist; nothing to collect there", root)
    print(f"collected {len(written)} result file(s) into {args.dest}")
    return 0


def _tables(args) -> int:
    from respodiff.reporting.tables import render_tables

    plots = None if args.no_plots else (args.plots or str(Path(args.out).parent / "plots"))
    tables = render_tables([r for r in args.results if Path(r).exists()], args.specs, args.out, plots)
    n_warn = sum(len(t.warnings) for t in tables.values())
    for name, t in tables.items():
        print(f"{name}: {t.filled} cell(s) with results, {len(t.warnings)} warning(s)")
    print(f"wrote {len(tables)} table(s) to {args.out} ({n_warn} warning(s), listed under each table)")
    return 1 if args.strict and n_warn else 0


def _quiet_tables(verbose: bool):
    """Every spec of the project is rendered; its missing cells are warnings (listed on each table and page) that
    would bury the output. Returns a function that restores the previous level for an in-process caller."""
    reporting_log = logging.getLogger("respodiff.reporting")
    previous = reporting_log.level
    if not verbose:
        reporting_log.setLevel(logging.ERROR)
    return lambda: reporting_log.setLevel(previous)


def _demo(args) -> int:
    """The last step of `make demo`: collect, tables, the comparison with the committed numbers, the site."""
    restore = _quiet_tables(args.verbose)
    try:
        return _show_demo(args)
    finally:
        restore()


def _show_demo(args) -> int:
    from respodiff.reporting.report import CPU_NOTE, comparison_markdown, demo_paths
    from respodiff.reporting.selection import split_results
    from respodiff.reporting.site import build_site
    from respodiff.reporting.store import collect_results, load_results
    from respodiff.reporting.tables import build_table, render_tables, spec_experiments

    root = Path(args.outputs[0])
    paths = demo_paths(root)
    results = Path(args.results or paths["runs"])
    tables_dir = Path(args.out or paths["tables"])
    for output_root in map(Path, args.outputs):
        source = output_root / args.experiment if (output_root / args.experiment).is_dir() else output_root
        if source.exists():
            collect_results(source, results)
    tables = render_tables([results] if results.exists() else [], args.specs, tables_dir, tables_dir.parent / "plots")
    reference = Path(args.reference)
    reference_refs = split_results(load_results([reference])) if reference.exists() else []
    shown = [t for t in tables.values() if args.experiment in spec_experiments(t.spec) and t.filled]
    if not shown:
        print(f"no result of experiment {args.experiment!r} fills a table; all tables are in {tables_dir}")
    for t in shown:
        path = tables_dir / f"{t.spec.name}.md"
        print()
        print(_filled_part(path.read_text(encoding="utf-8")))
        print(f"full table: {path}")
        print()
        print(f"This demo / the committed reference ({reference}; table results/tables/{t.spec.name}.md):")
        print()
        print(comparison_markdown(t, build_table(t.spec, reference_refs) if reference_refs else None))
    print()
    print(CPU_NOTE)
    print(f"results JSONs: {results}/{args.experiment}/; run folders (images, modules): "
          f"{', '.join(f'{r}/{args.experiment}/' for r in args.outputs)}")
    index = build_site([results], args.specs, Path(args.site or paths["site"]), args.outputs)
    if args.started is not None:
        print(f"demo wall time: {int(time.time() - args.started)} s")
    print(f"report: {index.resolve()}")
    return 0


def _filled_part(markdown: str) -> str:
    """A rendered table without its rows of dashes and its warning list: what the demo actually measured."""
    kept, skipping = [], False
    for line in markdown.splitlines():
        if line.startswith("Warnings (") or line.startswith("Runs:"):
            skipping = True
        elif skipping and not line.strip():
            skipping = False
            continue
        if skipping:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| ") else []
        if len(cells) > 1 and all(c == "–" for c in cells[1:]):
            continue
        kept.append(line)
    return "\n".join(kept).rstrip()


def _site(args) -> int:
    from respodiff.reporting.site import build_site
    from respodiff.reporting.wandb_logger import make_logger

    restore = _quiet_tables(args.verbose)
    logger = None
    if args.wandb:
        wandb_dir = Path(args.wandb_dir or Path(_default_outputs()) / "report-wandb")
        logger = make_logger({"name": "wandb", "project": args.wandb_project, "mode": "auto"}, wandb_dir,
                             group="report", name=Path(args.out).name)
    try:
        index = build_site(args.results, args.specs, args.out, args.outputs, n_columns=args.columns,
                           thumb_px=args.thumb_px, logger=logger)
    finally:
        restore()
        if logger is not None:
            logger.finish()
    print(f"report: {index.resolve()}")
    return 0


def _grid(args) -> int:
    from respodiff.reporting.grids import make_grid

    stores = {}
    for item in args.store:
        label, sep, folder = item.partition("=")
        if not sep:
            raise SystemExit(f"--store expects LABEL=FOLDER, got {item!r}")
        stores[label] = folder
    out = args.out or str(Path(args.out_dir) / f"{args.name or args.prompt.replace(' ', '_')}.png")
    print(make_grid(stores, args.prompt, out, n_columns=args.columns))
    return 0


def _threshold_curve(args) -> int:
    from respodiff.reporting.plots import threshold_curve_plot
    from respodiff.reporting.site.curves import CURVES, curve

    _, xlabel, metric = CURVES[args.benchmark]
    frame = curve(args.runs, args.benchmark, args.preset)
    print(frame.to_string(index=False))
    print(threshold_curve_plot(frame, args.out, xlabel=xlabel, ylabel=f"{metric} (95% interval)",
                               title=f"{args.benchmark}: rate vs detector threshold (re-scored, no model loaded)"))
    return 0


def _parser() -> argparse.ArgumentParser:
    from respodiff.reporting.site.curves import CURVES

    parser = argparse.ArgumentParser(prog="python -m respodiff.reporting", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("collect", help="copy run results JSONs into results/runs/<experiment>/<run_name>/")
    p.add_argument("outputs", nargs="*", default=["outputs", "multirun"], help="Hydra output roots to search")
    p.add_argument("--outputs", dest="outputs_opt", nargs="+", default=None, help="same as the positional roots")
    p.add_argument("--dest", default="results/runs")
    p.add_argument("--include-stand-ins", action="store_true",
                   help="also collect results scored by tiny-scale stand-in evaluators (left out by default)")
    p.set_defaults(func=_collect)

    p = sub.add_parser("demo", help="an experiment's local report: its tables beside the committed numbers, and a "
                                    "site; writes only under <outputs>/report/")
    p.add_argument("--experiment", required=True, help="e.g. gender_toy")
    p.add_argument("--outputs", nargs="+", default=[_default_outputs()],
                   help="output roots with the experiment's run folders (the first also holds the report)")
    p.add_argument("--reference", default="results/runs", help="committed results to compare with (read only)")
    p.add_argument("--specs", default="reproductions")
    p.add_argument("--results", default=None, help="where the demo's results are collected (<outputs>/report/runs)")
    p.add_argument("--out", default=None, help="tables folder (<outputs>/report/tables)")
    p.add_argument("--site", default=None, help="report site folder (<outputs>/report/site)")
    p.add_argument("--started", type=float, default=None, help="epoch seconds the demo started (prints wall time)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("tables", help="render every reproduction spec to markdown + LaTeX (+ plots)")
    p.add_argument("--results", nargs="*", default=["results/runs"], help="results folders or JSON files")
    p.add_argument("--specs", default="reproductions")
    p.add_argument("--out", default="results/tables")
    p.add_argument("--plots", default=None, help="plot folder (default: <out>/../plots)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--strict", action="store_true", help="exit 1 when any cell is missing or ambiguous")
    p.set_defaults(func=_tables)

    p = sub.add_parser("site", help="static report site: an index and one page per table (plots, image grids, "
                                    "evaluator cards); works from file://")
    p.add_argument("--results", nargs="*", default=["results/runs"], help="results folders or JSON files")
    p.add_argument("--outputs", nargs="*", default=[_default_outputs()],
                   help="roots with run folders holding the image stores (outputs/<experiment>/<run>/images/)")
    p.add_argument("--specs", default="reproductions")
    p.add_argument("--out", default="results/site")
    p.add_argument("--columns", type=int, default=6, help="images per grid row")
    p.add_argument("--thumb-px", type=int, default=128, help="largest thumbnail side; smaller images are kept whole")
    p.add_argument("--wandb", action="store_true", help="also log the grids and one table row per image to W&B "
                                                        "(offline unless an account is configured)")
    p.add_argument("--wandb-project", default="respodiff")
    p.add_argument("--wandb-dir", default=None, help="W&B run folder (default <outputs>/report-wandb)")
    p.set_defaults(func=_site)

    p = sub.add_parser("grid", help="image grid: rows = methods, columns = shared seeds")
    p.add_argument("--store", action="append", required=True, help="LABEL=IMAGE_STORE_FOLDER (repeatable, in order)")
    p.add_argument("--prompt", required=True, help="substring the prompts must contain, e.g. doctor")
    p.add_argument("--columns", type=int, default=4)
    p.add_argument("--out", default=None)
    p.add_argument("--out-dir", default="results/grids")
    p.add_argument("--name", default=None)
    p.set_defaults(func=_grid)

    p = sub.add_parser("threshold-curve", help="I2P rate vs detector threshold from stored per-image scores")
    p.add_argument("runs", nargs="+", help="run folders with <benchmark>.per_image.parquet")
    p.add_argument("--benchmark", choices=sorted(CURVES), default="i2p")
    p.add_argument("--preset", default=None, help="NudeNet class list of a preset (i2p)")
    p.add_argument("--out", required=True, help="PNG path, e.g. results/plots/i2p_toy_threshold_curve.png")
    p.set_defaults(func=_threshold_curve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except RespodiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
