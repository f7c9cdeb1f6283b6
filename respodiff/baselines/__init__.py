"""The baselines the paper compares against, run through the same sampler, seeds, benchmarks and tables.

| method.kind       | what differs from the base model                             | file               |
|-------------------|---------------------------------------------------------------|--------------------|
| base              | nothing (the "SD" rows)                                       |                    |
| negative_prompt   | the manifest's negative prompts                               | negative_prompt.py |
| sld               | diffusers' safe pipeline over the same components + call args | sld.py             |
| esd               | the UNet's weights (a published ESD file)                     | esd.py             |
| sdisc             | h-space vectors learnt on the base model's own images         | sdisc.py           |

The stages call the four hooks below; each is a no-op for the kinds it does not concern, so RespoDiff's own
methods (kind hspace) pass through unchanged. `method` is the resolved plain method config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..errors import ConfigError

# Kinds whose generation applies a TransformationSet from the run's modules folder.
MODULE_KINDS = ("hspace", "sdisc")


def validate_method(method: Mapping[str, Any], concepts: Mapping[str, Any], arch: str) -> None:
    """Config-time checks (milliseconds, no model and no file read)."""
    kind = method.get("kind")
    if kind == "sld":
        from . import sld

        sld.validate(method, arch)
    elif kind == "esd":
        from . import esd

        if method.get("weights"):
            esd.weights_path(method)  # suffix check; existence is an asset check (check_assets)
    elif kind == "sdisc":
        for key in ("images_per_concept", "lr", "parametrization", "init", "init_scale"):
            if method.get(key) is None:
                raise ConfigError(f"method.{key} must be set for SDisc")
    elif kind == "negative_prompt" and concepts.get("kind") == "fairness" and len(concepts.get("items") or {}) < 2:
        raise ConfigError("negative_prompt on fairness concepts needs two or more concepts (one is avoided per image)")


def check_assets(method: Mapping[str, Any]) -> None:
    """Before any stage that generates: files the method needs (ESD's weights) exist."""
    if method.get("kind") == "esd":
        from . import esd

        esd.check_assets(method)


def prepare_pipeline(pipe, method: Mapping[str, Any]):
    """The pipeline a method generates with, built from the loaded base pipeline (no second load)."""
    kind = method.get("kind")
    if kind == "sld":
        from . import sld

        return sld.safe_pipeline(pipe, method.get("safety_concept"))
    if kind == "esd":
        from . import esd

        esd.load_esd_weights(pipe.unet, method)
    return pipe


def generation_options(method: Mapping[str, Any], model_identity: str) -> dict[str, Any]:
    """Extra arguments of `respodiff.generation.generate` for a method: SLD's call arguments, and the model
    identity image stores are bound to (ESD's includes its weights' digest, so base and ESD images never mix)."""
    kind = method.get("kind")
    options: dict[str, Any] = {"model_identity": model_identity}
    if kind == "sld":
        from . import sld

        options["pipeline_kwargs"] = sld.sld_arguments(method)
    elif kind == "esd":
        from . import esd

        options["model_identity"] = esd.model_identity(model_identity, method)
    return options


def adjust_manifest(
    manifest: pd.DataFrame, method: Mapping[str, Any], concepts: Mapping[str, Any], sampling: str
) -> pd.DataFrame:
    """Per-image changes a method makes to a benchmark's manifest (negative prompts on fairness concepts)."""
    if method.get("kind") == "negative_prompt" and concepts.get("kind") == "fairness":
        from .negative_prompt import fairness_negative_prompts

        return fairness_negative_prompts(manifest, concepts, sampling)
    return manifest
