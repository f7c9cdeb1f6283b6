"""python -m benchmarks.smoke [--models sd14_arch,sdxl_arch] [--work DIR] [--out results/smoke]: see __init__.py."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from respodiff.io import write_json_atomically
from respodiff.provenance import provenance

from .evaluators import save_clip

REPO = Path(__file__).resolve().parents[2]
# One concept, 2 iterations with k <= 1, 2 images of 2 DDIM steps: every code path of a stage, at the least work.
COMMON = [
    "experiment=gender_sd14", "device=cpu", "~concepts.items.man",
    "train.iterations=2", "train.max_step_index=1", "train.checkpoint_every=2",
    "eval.benchmarks=[winobias]", "eval.winobias.professions=[doctor]", "+eval.winobias.templates=['Photo of {p}']",
    "eval.winobias.images_per_concept=2", "eval.sampler.steps=2", "eval.sampler.batch_size=1", "eval.bootstrap=10",
]
# SDXL at 1024 px fits 24 GiB for generation; training's backward through the decoder at 256 px keeps the CPU
# run short (the GPU check runs 1024). bf16 weights halve the 2.6B UNet's 10 GB.
PLANS = {
    "sd14_arch": dict(overrides=["model=sd14_arch"], stages=["train", "generate", "evaluate", "report"]),
    "sdxl_arch": dict(overrides=["model=sdxl_arch", "model.resolution=256", "model.dtype=bfloat16",
                                 "train.precision=bf16"], stages=["train", "generate"]),
}


def portable(text: str, work: Path) -> str:
    """A recorded command or path without this machine's folders: the interpreter is `python`, the work folder
    $WORK (the --work argument)."""
    return text.replace(sys.executable, "python").replace(str(work), "$WORK")


def run_stage(command: list[str], env: dict[str, str], log: Path, work: Path) -> dict:
    """Run one stage in its own process: wall seconds and that process's peak RSS (getrusage of the child)."""
    started = time.perf_counter()
    with open(log, "ab") as handle:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": round(time.perf_counter() - started, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "returncode": process.returncode, "command": portable(shlex.join(command), work)}


def smoke(model: str, work: Path, out: Path) -> dict:
    plan = PLANS[model]
    run_dir = work / model
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", RESPODIFF_CACHE=str(work / "cache"))
    overrides = [*COMMON, *plan["overrides"], f"hydra.run.dir={run_dir}", f"paths.cache_dir={work / 'cache'}",
                 f"eval.evaluators.clip.model={save_clip(work / 'clip-ViT-B-32', 'ViT-B/32')}"]
    stages = []
    for stage in plan["stages"]:
        command = [sys.executable, "run.py", *overrides, f"stage={stage}"]
        stages.append({"stage": stage, **run_stage(command, env, work / f"{model}.log", work)})
        print(json.dumps(stages[-1]), flush=True)
        if stages[-1]["returncode"] != 0:
            break
    else:
        if model == "sd14_arch":
            command = [sys.executable, "-m", "benchmarks.smoke.evaluators", "--images", str(run_dir / "images"),
                       "--work", str(work / "evaluators")]
            stages.append({"stage": "evaluators", **run_stage(command, env, work / f"{model}.log", work)})
            print(json.dumps(stages[-1]), flush=True)
    result = {"model": model, "ok": all(s["returncode"] == 0 for s in stages), "stages": stages,
              "command": shlex.join(["python", "-m", "benchmarks.smoke", "--models", model]),
              "log": portable(str(work / f"{model}.log"), work), **provenance()}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out / f"{model}.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.smoke", description=__doc__)
    parser.add_argument("--models", default="sd14_arch,sdxl_arch", help="comma-separated: sd14_arch, sdxl_arch")
    parser.add_argument("--work", help="run folders, caches and logs (default: a new temporary folder)")
    parser.add_argument("--out", default=str(REPO / "results" / "smoke"), help="where <model>.json goes")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="respodiff-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    results = [smoke(model, work, Path(args.out)) for model in args.models.split(",")]
    return 0 if all(result["ok"] for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
