"""Render a small fixed manifest with the tiny model: the process-level tests' worker.

    torchrun --standalone --nproc_per_node 2 tests/scripts/generate_tiny.py --cache-dir C --store S
    python tests/scripts/generate_tiny.py --cache-dir C --store S --sleep 0.05   # slow, to be killed mid-run

The tests import `tiny_job` from here too, so the worker and the in-process reference render the same thing.
"""

from __future__ import annotations

import argparse
import logging
import time

import pandas as pd
import torch

from respodiff.generation import ConceptPlan, SamplerSettings, build_manifest, generate
from respodiff.modules import HSpaceTransform, TransformationSet

H_SHAPE = (64, 8, 8)  # the tiny UNet's bottleneck at 32 px
SAMPLER = SamplerSettings(steps=3, guidance_scale=7.5, height=32, width=32, batch_size=3, eta=0.0)


def tiny_transformations(scale: float = 2.0) -> TransformationSet:
    """Two seeded constant concepts, large enough to change images visibly."""
    modules = {
        name: {"ram": HSpaceTransform(channels=64, height=8, width=8, init_scale=scale, seed=seed)}
        for seed, name in enumerate(["man", "woman"])
    }
    return TransformationSet(modules, {"h_shape": list(H_SHAPE), "base_model": "tiny"})


def tiny_job(samples_per_prompt: int = 4):
    """(manifest, transformations): 4 prompts x samples, one concept per image (balanced)."""
    table = pd.DataFrame(
        {
            "prompt_id": ["doctor", "nurse", "ceo", "teacher"],
            "prompt": ["a photo of a doctor", "a nurse", "portrait of a ceo", "image of a teacher"],
        }
    )
    plan = ConceptPlan(mode="fair", concepts=["man", "woman"], sampling="balanced")
    return build_manifest("tiny", table, samples_per_prompt, plan, SAMPLER), tiny_transformations()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--flush-every", type=int, default=8)
    parser.add_argument(
        "--sleep", type=float, default=0.0, help="seconds per UNet call, to make the run slow"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from accelerate import PartialState

    from respodiff.models import ModelSpec, load_pipeline

    state = PartialState(cpu=True)
    spec = ModelSpec(name="tiny", source="tiny", id="tiny", resolution=32, cache_dir=args.cache_dir)
    pipe = load_pipeline(spec, device=state.device)
    if args.sleep:
        pipe.unet.register_forward_pre_hook(lambda *_: time.sleep(args.sleep))
    manifest, transformations = tiny_job()
    sampler = SamplerSettings(**{**SAMPLER.__dict__, "batch_size": args.batch_size})
    generate(
        pipe,
        manifest,
        args.store,
        transformations,
        sampler,
        model_identity="tiny",
        progress=False,
        flush_every=args.flush_every,
    )
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
