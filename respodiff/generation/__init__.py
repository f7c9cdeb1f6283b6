"""Manifest-driven, batched, seeded, resumable, sharded image generation (docs/CONTRACTS.md, Generation).

    manifest = build_manifest("winobias", prompt_table, samples_per_prompt, plan, sampler)
    finished = generate(pipe, manifest, store_dir, transformations, sampler, model_identity=spec.identity)

`plan` says what a manifest holds, `store` how an image store lies on disk, `engine` which images are rendered
and recorded, `render` how a batch becomes PNG files, `completion` whether a store is finished without loading
a model.
"""

from .completion import generation_fingerprint, is_finished, mark_finished, unfinished_images
from .engine import ENGINE_VERSION, generate, resolve_modules, store_identity
from .plan import (
    DONE,
    IMAGE_DEFINING_COLUMNS,
    MANIFEST_COLUMNS,
    PLAN_MODES,
    SAMPLINGS,
    ConceptPlan,
    SamplerSettings,
    build_manifest,
    safe_path_component,
    weights_of,
)
from .store import MANIFEST_FILE, STORE_FILE, image_ok, read_manifest

__all__ = [
    "DONE",
    "ENGINE_VERSION",
    "IMAGE_DEFINING_COLUMNS",
    "MANIFEST_COLUMNS",
    "MANIFEST_FILE",
    "PLAN_MODES",
    "SAMPLINGS",
    "STORE_FILE",
    "ConceptPlan",
    "SamplerSettings",
    "build_manifest",
    "generate",
    "generation_fingerprint",
    "image_ok",
    "is_finished",
    "mark_finished",
    "unfinished_images",
    "read_manifest",
    "resolve_modules",
    "safe_path_component",
    "store_identity",
    "weights_of",
]
