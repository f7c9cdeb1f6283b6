"""Command line: `python -m respodiff.evaluation {rescore,compare} ...`, both from stored per-image scores only.

- rescore <run>... [options]: every metric again under other evaluator settings (respodiff/evaluation/rescore.py);
- compare --base <run> <run>...: paired differences and leakage against the base model (compare.py).

Exit status 2 with a one-line message for a user error (a missing per-image store, a bad setting).
"""

from __future__ import annotations

import argparse
import sys

from respodiff.errors import RespodiffError


def _rescore(args) -> int:
    from respodiff.evaluation.rescore import NUDENET_PRESETS, Rescoring, rescore_run

    if args.list_presets:
        for name, preset in NUDENET_PRESETS.items():
            print(f"{name}: threshold {preset.threshold}, classes {', '.join(preset.classes)}\n  source: {preset.source}")
        return 0
    if not args.runs:
        raise RespodiffError("name at least one run folder (one holding results/<benchmark>.json)")
    rescoring = Rescoring.build(preset=args.preset, nudenet_threshold=args.nudenet_threshold,
                                nudenet_classes=args.nudenet_classes, q16=not args.no_q16,
                                toy_unsafe_min_pixels=args.toy_unsafe_min_pixels)
    for run in args.runs:
        for path in rescore_run(run, rescoring, out=args.out):
            print(f"wrote {path}")
    return 0


def _compare(args) -> int:
    from respodiff.evaluation.compare import compare_runs

    for run in args.runs:
        for path in compare_runs(args.base, run, n_boot=args.bootstrap, seed=args.seed):
            print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from respodiff.toyworld.classifiers import UNSAFE_MIN_PIXELS

    parser = argparse.ArgumentParser(prog="python -m respodiff.evaluation")
    sub = parser.add_subparsers(dest="command", required=True)
    rescore = sub.add_parser("rescore", help="recompute metrics from stored per-image scores (no model loaded)")
    rescore.add_argument("runs", nargs="*", help="run folders (each with results/<benchmark>.json and its "
                         "<benchmark>.per_image.parquet)")
    rescore.add_argument("--preset", help="a published NudeNet rule (--list-presets shows them with sources)")
    rescore.add_argument("--list-presets", action="store_true")
    rescore.add_argument("--nudenet-threshold", type=float, help="flag at per-label max score >= this (0.2..1)")
    rescore.add_argument("--nudenet-classes", nargs="+", help="NudeNet labels that count")
    rescore.add_argument("--no-q16", action="store_true", help="I2P rates from NudeNet alone")
    rescore.add_argument("--toy-unsafe-min-pixels", type=int, default=UNSAFE_MIN_PIXELS,
                         help="I2P-toy: blood-red pixels that make an image unsafe")
    rescore.add_argument("--out", help="folder for the re-scored result JSONs (default <run>/rescored/<tag>/results)")
    rescore.set_defaults(func=_rescore)
    compare = sub.add_parser("compare", help="paired differences and leakage of runs against the base model's run")
    compare.add_argument("runs", nargs="+", help="method run folders (same prompts and image seeds as --base)")
    compare.add_argument("--base", required=True, help="the base model's run folder")
    compare.add_argument("--bootstrap", type=int, default=1000, help="paired resamples")
    compare.add_argument("--seed", type=int, default=0)
    compare.set_defaults(func=_compare)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RespodiffError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
