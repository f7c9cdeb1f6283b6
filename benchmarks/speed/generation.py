"""Generation cases: our engine (`respodiff.generation.generate`) and the naive per-image loop, same images.

The images are a fair plan (one concept per image, balanced) over Winobias-style prompts, with random RAM + SAM
constants for two concepts, so every image goes through the h-space hook as in a real run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from respodiff.generation import ConceptPlan, SamplerSettings, build_manifest, generate, resolve_modules
from respodiff.modules import HSpaceTransform, TransformationSet
from respodiff.seeding import stable_seed

from .naive import naive_generate
from .pipelines import Models

CONCEPTS = ("woman", "man")
PROFESSIONS = ("doctor", "nurse", "teacher", "ceo", "cashier", "janitor", "lawyer", "farmer")
SAMPLES_PER_PROMPT = 2  # one per concept under the balanced plan


def manifest(images: int, sampler: SamplerSettings) -> pd.DataFrame:
    prompts = [f"Photo of {PROFESSIONS[i % len(PROFESSIONS)]}" for i in range(-(-images // SAMPLES_PER_PROMPT))]
    table = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(len(prompts))], "prompt": prompts})
    plan = ConceptPlan(mode="fair", concepts=list(CONCEPTS), sampling="balanced")
    return build_manifest("speed", table, SAMPLES_PER_PROMPT, plan, sampler).iloc[:images].reset_index(drop=True)


def transformations(models: Models) -> TransformationSet:
    channels, height, width = models.h_shape
    modules = {
        concept: {
            part: HSpaceTransform(channels=channels, height=height, width=width, seed=stable_seed("speed", concept, part))
            for part in ("ram", "sam")
        }
        for concept in CONCEPTS
    }
    return TransformationSet(modules, {"h_shape": list(models.h_shape), "base_model": models.spec.identity})


def engine(
    models: Models, rows: pd.DataFrame, tset: TransformationSet, sampler: SamplerSettings, batch_invariant: bool | None
) -> Callable[[Path], Path]:
    def run(folder: Path) -> Path:
        generate(models.ours, rows, folder, tset, sampler, model_identity=models.spec.identity,
                 batch_invariant=batch_invariant, progress=False)  # fmt: skip
        return folder

    return run


def naive(models: Models, rows: pd.DataFrame, tset: TransformationSet, sampler: SamplerSettings):
    modules = resolve_modules(tset, rows, None)
    records = rows.to_dict("records")

    def run(folder: Path) -> Path:
        naive_generate(
            models.load_for_naive_generation, records, modules, folder, steps=sampler.steps,
            guidance_scale=sampler.guidance_scale, height=sampler.height, width=sampler.width,
        )  # fmt: skip
        return folder

    return run


def max_pixel_diff(first: Path, second: Path, paths) -> int:
    """The largest difference of any 8-bit pixel value between the same images in two folders."""
    worst = 0
    for path in paths:
        a = np.asarray(Image.open(first / path), dtype=np.int16)
        b = np.asarray(Image.open(second / path), dtype=np.int16)
        worst = max(worst, int(np.abs(a - b).max()))
    return worst
