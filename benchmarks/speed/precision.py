"""What a faster training precision does to the trained modules: the same iterations (same k, same noise) in fp32
and in each mixed-precision mode, compared module by module.

    python -m benchmarks.speed.precision                      # CPU: tiny model, fp32 vs bf16 autocast (~1 min)
    python -m benchmarks.speed.precision --model sd14_arch    # GPU: SD v1.4's architecture at 512 px, fp32 vs
                                                              # bf16 / fp16 autocast and fp16 weights (< 8 min, H100)

The public scripts train in fp32 (the `*_sd14` experiments' train.precision); this measures what bf16 / fp16 would
change. Per variant and part: rel_diff = ||p - p_fp32|| / ||p_fp32 - p_init|| (the difference as a fraction of what
fp32 training moved the module) and the cosine between the two updates. Writes
results/speed/precision-<model>-<device>.json with the command and the machine.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from respodiff.io import write_json_atomically
from respodiff.models import ModelSpec, load_pipeline
from respodiff.modules import HSpaceTransform
from respodiff.provenance import provenance
from respodiff.seeding import stable_seed
from respodiff.training import ConceptSpec, TrainSettings, train_transformations

REPO = Path(__file__).resolve().parents[2]
CONCEPT = ConceptSpec("woman", "a person", target_prompt="a woman", lr_ram=1e-2, lr_sam=1e-3)
# variant: (weights dtype, train.precision). fp16w is what model.dtype=auto with train.precision=auto did on a GPU.
VARIANTS = {"fp32": (torch.float32, "fp32"), "bf16": (torch.float32, "bf16"), "fp16": (torch.float32, "fp16"),
            "fp16w": (torch.float16, "auto")}
PRESETS = {
    "tiny": dict(spec=dict(name="tiny", source="tiny", id="tiny", resolution=32), iterations=20, max_step_index=8,
                 variants="fp32,bf16"),
    "sd14_arch": dict(spec=dict(name="sd14_arch", source="arch", id="sd14", resolution=512), iterations=40,
                      max_step_index=48, variants="fp32,bf16,fp16,fp16w"),
}


def train_variant(spec: ModelSpec, variant: str, settings: TrainSettings, device: str, out: Path) -> dict:
    dtype, precision = VARIANTS[variant]
    pipe = load_pipeline(spec, device=device, dtype=dtype)
    h_shape = _h_shape(pipe, spec.resolution)
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    modules = train_transformations(pipe, [CONCEPT], replace(settings, precision=precision), out / variant, spec.id,
                                    h_shape)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    parts = {part: module.delta.detach().float().cpu() for part, module in modules.modules[CONCEPT.name].items()}
    return {"seconds": round(seconds, 2), "parts": parts, "h_shape": h_shape}


def compare(results: dict, settings: TrainSettings) -> dict:
    reference = results["fp32"]
    c, h, w = reference["h_shape"]
    table = {}
    for variant, result in results.items():
        row = {"seconds": result["seconds"]}
        for part, value in result["parts"].items():
            initial = HSpaceTransform("constant", c, h, w, init="uniform", init_scale=settings.init_scale,
                                      seed=stable_seed(settings.seed, CONCEPT.name, part)).delta.detach()
            moved, update = reference["parts"][part] - initial, value - initial
            row[f"{part}_rel_diff"] = float((value - reference["parts"][part]).norm() / moved.norm())
            row[f"{part}_update_cosine"] = float(torch.nn.functional.cosine_similarity(
                moved.flatten(), update.flatten(), dim=0))
        table[variant] = row
    return table


def _h_shape(pipe, resolution: int) -> tuple[int, int, int]:
    from respodiff.hspace import hspace_shape

    return hspace_shape(pipe.unet, resolution // pipe.vae_scale_factor)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed.precision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--variants", help=f"comma-separated of {sorted(VARIANTS)}; fp32 always runs")
    parser.add_argument("--cache-dir", help="where the tiny model is built (default: ~/.cache/respodiff)")
    parser.add_argument("--out-dir", default=str(REPO / "results" / "speed"))
    args = parser.parse_args(argv)
    preset = PRESETS[args.model]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    spec = ModelSpec(**preset["spec"], dtype="float32", cache_dir=args.cache_dir)
    settings = TrainSettings(iterations=args.iterations or preset["iterations"], max_step_index=preset["max_step_index"],
                             checkpoint_every=10_000, log_every=10_000)
    variants = ["fp32"] + [v for v in (args.variants or preset["variants"]).split(",") if v != "fp32"]
    with tempfile.TemporaryDirectory(prefix="respodiff-precision-") as work:
        results = {v: train_variant(spec, v, settings, device, Path(work)) for v in variants}
    payload = {"model": args.model, "device": device, "iterations": settings.iterations,
               "max_step_index": settings.max_step_index, "concept": CONCEPT.name, "variants": compare(results, settings),
               "command": shlex.join(["python", "-m", "benchmarks.speed.precision", *argv]), **provenance()}
    path = Path(args.out_dir) / f"precision-{args.model}-{device}.json"
    write_json_atomically(path, payload)
    for variant, row in payload["variants"].items():
        print(variant, row)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
