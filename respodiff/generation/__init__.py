"""Manifest-driven, batched, seeded, resumable, sharded image generation (docs/CONTRACTS.md, Generation).

    manifest = build_manifest("winobias", prompt_table, samples_per_prompt, plan, sampler)
    finished = generate(pipe, manifest, store_dir, transformations, sampler, model_identity=spec.identity)

`plan` says what a manifest holds, `store` how an image store lies on disk, `engine` how it is rendered.
"""

from .engine import ENGINE_VERSION, generate, module_digest, resolve_modules, store_identity
from .plan import (
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
    "image_ok",
    "module_digest",
    "read_manifest",
    "resolve_modules",
    "safe_path_component",
    "store_identity",
    "weights_of",
]
