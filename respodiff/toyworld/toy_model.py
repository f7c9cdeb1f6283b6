"""The toy model's architecture (a small AutoencoderKL, CLIP text encoder and UNet) and its diffusers layout.

train_toy_model builds it from these functions and check_toy_model rebuilds it from a training checkpoint, so the
sizes are written once.
"""

from __future__ import annotations

from pathlib import Path

from respodiff.io import write_json_atomically
from respodiff.models import DDIM_SETTINGS, sd_pipeline

from .tokenizer import MODEL_MAX_LENGTH, write_tokenizer_files
from .world import IMAGE_SIZE

# PROTOCOL.md's DDIM settings; training draws noise on the matching DDPM schedule.
SCHEDULER_KW = dict(DDIM_SETTINGS, prediction_type="epsilon")


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
    )


def make_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MODEL_MAX_LENGTH,
        projection_dim=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(cfg)


def make_unet():
    from diffusers import UNet2DConditionModel

    # 8x8 latents -> 4x4 bottleneck: h-space is 128 x 4 x 4 (SD1.4's is 1280 x 8 x 8). Two levels
    # keep the bottleneck spatial and the model ~3M parameters (~0.3 s per batch of 64 on 2 cores).
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128),
        layers_per_block=1,
        cross_attention_dim=128,
        attention_head_dim=4,
        norm_num_groups=32,
    )


def save_pipeline(out: Path, vae, text_encoder, tokenizer, unet, meta: dict) -> None:
    from diffusers import DDIMScheduler

    pipe = sd_pipeline(vae.eval(), text_encoder.eval(), tokenizer, unet.eval(), DDIMScheduler(**SCHEDULER_KW))
    pipe.save_pretrained(out, safe_serialization=True)
    # transformers 5 saves tokenizer.json only; keep the CLIP BPE source files beside it too.
    write_tokenizer_files(out / "tokenizer")
    write_json_atomically(out / "toy_model_card.json", meta)
