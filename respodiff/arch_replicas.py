"""Architecture replicas: SD v1.4's and SDXL base 1.0's networks at their published sizes with random weights, for
speed benchmarks and the paper-scale smoke run without a download."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .errors import ConfigError
from .io import default_cache_dir
from .models import DDIM_SETTINGS, TINY_WORDS, sd_pipeline

ARCH_REPLICAS = ("sd14", "sdxl")
# The UNets' arguments (the rest are diffusers' defaults, which match the published configs).
UNET_ARGUMENTS = {
    "sd14": dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8),
    "sdxl": dict(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,  # 6 * 256 time ids + 1280 pooled text
    ),
}


def _check_name(name: str) -> None:
    if name not in ARCH_REPLICAS:
        raise ConfigError(f"no architecture replica named {name!r}; available: {ARCH_REPLICAS}")


def arch_unet_config(name: str) -> dict:
    """The replica UNet's full config, as its config.json would hold it, built on the meta device: no weight is
    allocated, so model identities and ESD checks can use it before anything loads."""
    from diffusers import UNet2DConditionModel

    _check_name(name)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNET_ARGUMENTS[name])
    return json.loads(json.dumps({"_class_name": type(unet).__name__, **unet.config}, default=list))


def build_arch_pipeline(name: str, dtype: torch.dtype = torch.float32):
    """SD v1.4's or SDXL base 1.0's UNet, VAE and text encoder architectures with random weights (nothing is
    downloaded); the sizes are those of the published model configs."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTokenizer

    from .tokenizer import write_clip_tokenizer

    _check_name(name)
    tokenizer_dir = write_clip_tokenizer(default_cache_dir() / "arch-tokenizer", TINY_WORDS)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    # SD 1.x and SDXL share the VAE architecture; SDXL rescales latents by 0.13025 instead of 0.18215.
    vae = dict(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
    )
    if name == "sd14":  # built in this order so the random weights stay those of earlier benchmark runs
        unet = UNet2DConditionModel(**UNET_ARGUMENTS["sd14"])
        vae_model = AutoencoderKL(**vae, sample_size=512)
        text_encoder = _clip_text(tokenizer, 768, 12, 12, 3072, "quick_gelu")
        return sd_pipeline(vae_model, text_encoder, tokenizer, unet, DDIMScheduler(**DDIM_SETTINGS)).to(dtype=dtype)
    with _default_dtype(dtype):  # 3.5B parameters: built in `dtype` directly, never all held in fp32 first
        return _sdxl_arch(tokenizer, vae).to(dtype=dtype)


def _sdxl_arch(tokenizer, vae: dict):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(**UNET_ARGUMENTS["sdxl"])
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(**vae, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
        text_encoder=_clip_text(tokenizer, 768, 12, 12, 3072, "quick_gelu"),
        text_encoder_2=_clip_text(tokenizer, 1280, 32, 20, 5120, "gelu", projection_dim=1280),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**DDIM_SETTINGS),
    )


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _clip_text(tokenizer, width: int, layers: int, heads: int, intermediate: int, activation: str,
               projection_dim: int | None = None):
    """A CLIP text encoder of the given size (with a projection head: SDXL's second encoder) at random weights."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=activation,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **({} if projection_dim is None else {"projection_dim": projection_dim}),
    )
    return CLIPTextModel(config) if projection_dim is None else CLIPTextModelWithProjection(config)
