"""python -m benchmarks.speed --model tiny | sd14_arch [options]: see benchmarks/speed/README.md."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import fields, replace

from .harness import PRESETS, BenchConfig, run

# Environment variables that change what is measured; the recorded command carries them.
RECORDED_ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def parse(argv: list[str]) -> BenchConfig:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__)
    parser.add_argument("--model", default="tiny", help="a conf/model/*.yaml name: tiny (CPU) or sd14_arch (GPU)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, help="timed rounds; medians are reported")
    parser.add_argument("--train-batch-sizes", type=_ints, help="comma-separated, e.g. 1,8")
    parser.add_argument("--train-iterations", type=_ints, help="iterations of one timed run, one per batch size")
    parser.add_argument("--max-step-index", type=int, help="k is drawn from 0..this (protocol: 48)")
    parser.add_argument("--train-precision", help="our trainer's train.precision: auto | fp32 | bf16 | fp16 (naive: fp32)")
    parser.add_argument("--images", type=int, help="images of one timed engine run")
    parser.add_argument("--naive-images", type=int, help="images of one timed naive generation run")
    parser.add_argument("--gen-batch-size", type=int, help="the engine's batch size")
    parser.add_argument("--gen-steps", type=int, help="DDIM steps per image (protocol: 50)")
    parser.add_argument("--guidance", type=float, help="CFG scale of generation (protocol: 7.5)")
    parser.add_argument("--resolution", type=int, help="pixels (default: the model config's)")
    parser.add_argument("--channels-last", action="store_true", default=None, help="our UNet and VAE channels-last")
    parser.add_argument("--compile", action="store_true", default=None, help="regional torch.compile of our UNet")
    parser.add_argument("--peak-tflops", type=float, help="the device peak to compute the FLOP floor against")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cache-dir", help="where the tiny model is built (default: ~/.cache/respodiff)")
    parser.add_argument("--out-dir", help="where the results JSON goes (default: results/speed)")
    parser.add_argument("--tag", help="appended to the results file name, e.g. compile")
    args = vars(parser.parse_args(argv))
    if args["model"] not in PRESETS:
        parser.error(f"--model must be one of {sorted(PRESETS)}")
    config = replace(BenchConfig(model=args["model"]), **PRESETS[args["model"]])
    given = {f.name: args[f.name] for f in fields(BenchConfig) if args.get(f.name) is not None}
    return replace(config, **given)


def command_line(argv: list[str]) -> str:
    environment = [f"{key}={shlex.quote(os.environ[key])}" for key in RECORDED_ENVIRONMENT if key in os.environ]
    return " ".join([*environment, "python", "-m", "benchmarks.speed", *map(shlex.quote, argv)])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config = parse(argv)
    results, path = run(config, command_line(argv))
    print(summary(results))
    print(f"written: {path}")
    return 0


def summary(results: dict) -> str:
    lines = [f"{results['model']} on {results['device']} ({results['threads']} threads); peak "
             f"{results['peak']['tflops']:.3g} TFLOP/s ({results['peak']['source']})"]  # fmt: skip
    for group, t in results["training"].items():
        lines.append(
            f"{group}: ours {t['ours']['rate']:.3g} it/s, naive {t['naive']['rate']:.3g} it/s, "
            f"speedup {t['speedup']:.2f}x; ours {t['ours']['achieved_tflops']:.3g} TFLOP/s "
            f"({100 * t['ours']['fraction_of_peak']:.1f}% of peak), peak memory {t['ours']['peak_memory_gib']:.2f} GiB"
        )
    gen = results["generation"]
    for role in ("engine", "engine_batched"):
        if role in gen:
            g = gen[role]
            lines.append(
                f"generation {role}: {g['rate']:.3g} images/s vs naive {gen['naive']['rate']:.3g}, speedup "
                f"{g['speedup']:.2f}x; {g['achieved_tflops']:.3g} TFLOP/s ({100 * g['fraction_of_peak']:.1f}% of "
                f"peak), max pixel diff vs naive {g['max_pixel_diff_vs_naive']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
