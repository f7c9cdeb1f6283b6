"""Safe Latent Diffusion (Schramowski et al., CVPR 2023) through diffusers' own safe pipeline.

The safe pipeline is assembled from the components the run already loaded (VAE, text encoder, tokenizer, UNet and
the paper's DDIM scheduler), so nothing is downloaded twice and SLD samples with exactly the sampler, seeds and
manifests the other methods use. SLD's strength is a set of call arguments; diffusers ships four presets
(`SafetyConfig.WEAK` / `MEDIUM` / `STRONG` / `MAX`) and the generation engine passes the chosen one to every
pipeline call (`pipeline_kwargs`, recorded in the image store's identity).

The safety checker stays off, as in every other row: the paper's numbers are measured without it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from .base import Method, register_method

log = logging.getLogger(__name__)

PRESETS = ("weak", "medium", "strong", "max")
SLD_ARGUMENTS = ("sld_guidance_scale", "sld_warmup_steps", "sld_threshold", "sld_momentum_scale", "sld_mom_beta")


def safety_config():
    """diffusers' SafetyConfig (moved under pipelines/deprecated in recent releases)."""
    try:
        from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig
    except ImportError:  # older diffusers kept it at the top of pipelines/
        from diffusers.pipelines.stable_diffusion_safe import SafetyConfig
    return SafetyConfig


def sld_arguments(method: Mapping[str, Any]) -> dict[str, Any]:
    """The SLD call arguments of a method config: the preset's values, then `params` overriding single ones."""
    preset = str(method.get("preset", "")).lower()
    if preset not in PRESETS:
        raise ConfigError(f"method.preset {method.get('preset')!r} is not one of {PRESETS} (diffusers' SafetyConfig)")
    arguments = dict(getattr(safety_config(), preset.upper()))
    params = dict(method.get("params") or {})
    unknown = sorted(set(params) - set(SLD_ARGUMENTS))
    if unknown:
        raise ConfigError(f"method.params {unknown} are not SLD arguments; known: {list(SLD_ARGUMENTS)}")
    arguments.update({key: value for key, value in params.items() if value is not None})
    if float(arguments["sld_guidance_scale"]) <= 1.0:
        # diffusers silently falls back to plain SD below this; a row labelled SLD must not be plain SD.
        raise ConfigError(f"sld_guidance_scale must be > 1 for SLD to act, got {arguments['sld_guidance_scale']}")
    if not 0.0 <= float(arguments["sld_mom_beta"]) <= 1.0:
        raise ConfigError(f"sld_mom_beta must lie in [0, 1], got {arguments['sld_mom_beta']}")
    if int(arguments["sld_warmup_steps"]) < 0:
        raise ConfigError(f"sld_warmup_steps must be >= 0, got {arguments['sld_warmup_steps']}")
    return {key: arguments[key] for key in SLD_ARGUMENTS}


def validate(method: Mapping[str, Any], arch: str) -> None:
    if arch != "sd":
        raise ConfigError(
            f"method {method.get('name')!r} (SLD) needs an SD 1.x/2.x model: diffusers' safe pipeline has no "
            f"SDXL variant, and model.arch is {arch!r}"
        )
    sld_arguments(method)


def safe_pipeline(pipe, safety_concept: str | None = None):
    """diffusers' StableDiffusionPipelineSafe over the components of a loaded StableDiffusionPipeline."""
    from diffusers import StableDiffusionPipelineSafe

    if getattr(pipe, "text_encoder_2", None) is not None:
        raise ConfigError("SLD needs an SD 1.x/2.x pipeline; diffusers' safe pipeline has no SDXL variant")
    safe = StableDiffusionPipelineSafe(
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # Keep the loaded model's name: stores and logs name the model, not the pipeline class (recorded separately).
    safe.register_to_config(_name_or_path=pipe.config.get("_name_or_path", ""))
    safe.set_progress_bar_config(disable=True)
    if safety_concept:
        safe.safety_concept = safety_concept
    log.info("SLD: diffusers' safe pipeline over the loaded components; safety concept %r", safe.safety_concept)
    return safe


@register_method
class SLDMethod(Method):
    """SLD at one of diffusers' presets (conf/method/sld_*.yaml), `params` overriding single arguments."""

    kind = "sld"
    keys = frozenset({"preset", "params", "safety_concept"})

    def validate(self, arch: str) -> None:
        validate(self.options, arch)

    def prepare_pipeline(self, pipe):
        return safe_pipeline(pipe, self.options.get("safety_concept"))

    def generation_options(self, model_identity: str) -> dict[str, Any]:
        return {"model_identity": model_identity, "pipeline_kwargs": sld_arguments(self.options)}
