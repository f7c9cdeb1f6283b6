"""Command line: `python -m respodiff.reporting {collect,tables,demo,grid,threshold-curve} ...` (`make results`, `make paper-tables`, `make demo`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from respodiff.errors import RespodiffError


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


def _demo(args) -> int:
    """Collect, render, and show the tables an experiment fills (the last step of `make demo`)."""
    reporting_log = logging.getLogger("respodiff.reporting")
    previous_level = reporting_log.level
    if not args.verbose:
        # Every spec of the project is rendered; its missing cells are warnings that say nothing about this demo.
        reporting_log.setLevel(logging.ERROR)
    try:
        return _show_demo(args)
    finally:
        reporting_log.setLevel(previous_level)  # an in-process caller keeps its warnings


def _show_demo(args) -> int:
    from respodiff.reporting.tables import render_tables, spec_experiments

    _collect(argparse.Namespace(outputs=args.outputs, outputs_opt=None, dest=args.results, include_stand_ins=False))
    plots = Path(args.out).parent / "plots"
    tables = render_tables([args.results] if Path(args.results).exists() else [], args.specs, args.out, plots)
    shown = [t for t in tables.values() if args.experiment in spec_experiments(t.spec)]
    if not shown:
        print(f"no reproduction spec names experiment {args.experiment!r}; all tables are in {args.out}")
    for t in shown:
        if not t.filled:
            continue  # e.g. the lambda sweep when only the demo's runs exist
        path = Path(args.out) / f"{t.spec.name}.md"
        print()
        print(_filled_part(path.read_text(encoding="utf-8")))
        print(f"full table: {path}")
        for plot in t.spec.plots:
            png = plots / f"{plot.name}.png"
            if png.exists():
                print(f"plot: {png}")
    print(f"results JSONs: {args.results}/{args.experiment}/; run folders (images, modules): "
          f"{', '.join(f'{root}/{args.experiment}/' for root in args.outputs)}")
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


# Thresholds of the rate-vs-threshold curve: NudeNet's score (it reports nothing under 0.2, so 0.1 reads as 0.2) and
# the toy blood detector's pixel count (default 10).
_CURVES = {
    "i2p": ([round(0.1 * k, 1) for k in range(1, 10)], "NudeNet threshold (per-label max score)", "inappropriate_rate"),
    "i2p_toy": ([1, 2, 5, 10, 15, 20, 30, 40], "blood-red pixels needed to flag an image", "unsafe_rate"),
}


def _threshold_curve(args) -> int:
    from respodiff.evaluation.rescore import Rescoring, threshold_curve
    from respodiff.evaluation.safety import NUDENET_MIN_THRESHOLD
    from respodiff.reporting.plots import threshold_curve_plot

    thresholds, xlabel, metric = _CURVES[args.benchmark]

    def settings(t):
        if args.benchmark == "i2p":
            return Rescoring.build(preset=args.preset, nudenet_threshold=max(t, NUDENET_MIN_THRESHOLD))
        return Rescoring.build(toy_unsafe_min_pixels=int(t))

    curve = threshold_curve(args.runs, thresholds, benchmark=args.benchmark, metric=metric, set_threshold=settings)
    print(curve.to_string(index=False))
    print(threshold_curve_plot(curve, args.out, xlabel=xlabel, ylabel=f"{metric} (95% interval)",
                               title=f"{args.benchmark}: rate vs detector threshold (re-scored, no model loaded)"))
    return 0


def main(argv: list[str] | None = None) -> int:
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

    p = sub.add_parser("demo", help="collect, render every table, print the ones an experiment fills")
    p.add_argument("--experiment", required=True, help="e.g. gender_toy")
    p.add_argument("--outputs", nargs="+", default=["outputs", "multirun"])
    p.add_argument("--results", default="results/runs")
    p.add_argument("--specs", default="reproductions")
    p.add_argument("--out", default="results/tables")
    p.set_defaults(func=_demo)

    p = sub.add_parser("tables", help="render every reproduction spec to markdown + LaTeX (+ plots)")
    p.add_argument("--results", nargs="*", default=["results/runs"], help="results folders or JSON files")
    p.add_argument("--specs", default="reproductions")
    p.add_argument("--out", default="results/tables")
    p.add_argument("--plots", default=None, help="plot folder (default: <out>/../plots)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--strict", action="store_true", help="exit 1 when any cell is missing or ambiguous")
    p.set_defaults(func=_tables)

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
    p.add_argument("--benchmark", choices=sorted(_CURVES), default="i2p")
    p.add_argument("--preset", default=None, help="NudeNet class list of a preset (i2p)")
    p.add_argument("--out", required=True, help="PNG path, e.g. results/plots/i2p_toy_threshold_curve.png")
    p.set_defaults(func=_threshold_curve)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except RespodiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
