"""One loader for every model source: a Hub id, a local folder, the shipped toy model, the tiny test model and
random-weight architecture replicas for speed benchmarks.

All sources but `arch` end in the same call, `DiffusionPipeline.from_pretrained(location)`, so the tests that load the
tiny model from a temporary folder exercise the code path that loads Stable Diffusion from the Hub.
Availability is checked first (`check_model_available`), so a missing model fails in seconds with a message that
names the model, the cache folder and the command that fetches it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, MissingAssetError
from .io import canonical_hash, default_cache_dir, temporary_sibling, weights_fingerprint

SOURCES = ("hub", "local", "toy", "tiny", "arch")
ARCHITECTURES = ("sd", "sdxl")
# PROTOCOL.md section 2: the DDIM scheduler of the paper's training and generation.
DDIM_SETTINGS = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    num_train_timesteps=1000,
)
TINY_WORDS = (
    "a person man woman white black asian race violence sexual scene gorgeous photo image picture of headshot "
    "portrait doctor nurse ceo teacher"
).split()
# Bump when the tiny builder changes, so cached folders from an older builder are not reused.
TINY_VERSION = 2
REPO_ROOT = Path(__file__).resolve().parent.parent
# What the tiny SD and SDXL UNets share (diffusers' own dummy-component sizes, GroupNorm over 8 groups).
TINY_UNET = dict(
    block_out_channels=(32, 64),
    layers_per_block=2,
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and how to load it (the `model` config group)."""

    name: str
    source: str
    id: str
    arch: str = "sd"
    revision: str | None = None
    variant: str | None = None
    resolution: int = 512
    dtype: str = "auto"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"model.source {self.source!r} is not one of {SOURCES}")
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"model.arch {self.arch!r} is not one of {ARCHITECTURES}")
        if self.resolution <= 0 or self.resolution % 8:
            raise ConfigError(f"model.resolution must be a positive multiple of 8, got {self.resolution}")

    @classmethod
    def from_config(cls, cfg: Any) -> ModelSpec:
        fields = cls.__dataclass_fields__
        return cls(**{key: cfg[key] for key in fields if key in cfg and cfg[key] is not None})

    @property
    def identity(self) -> str:
        """What modules and image stores record as their base model. A Hub id with its revision names one model
        and architecture; a folder (local, toy, the tiny model) gets its name, a fingerprint of its weights (modules
        and images made before a retrain are not reused) and its architecture: the UNet's class and a hash of its
        config, so that two models of the same name and h-space shape (tiny SD and tiny SDXL) never share modules."""
        if self.source == "hub":
            return f"{self.id}@{self.revision}" if self.revision else self.id
        base = self.id
        if self.source in ("local", "toy") and (model_folder(self) / "model_index.json").is_file():
            base = f"{self.id}#{weights_fingerprint(model_folder(self))}"
        return f"{base}|{self.architecture()}"

    def architecture(self) -> str:
        """`<arch>:<UNet class>:<12 hex digits of its config>` from the UNet's config.json (no weight is read);
        just `<arch>` where no config is on disk yet (a Hub model not downloaded)."""
        config = self.unet_config()
        if config is None:
            return self.arch
        public = {key: value for key, value in config.items() if not key.startswith("_")}
        return f"{self.arch}:{config.get('_class_name', 'UNet')}:{canonical_hash(public)[:12]}"

    def unet_config(self) -> dict[str, Any] | None:
        """The UNet's config.json as stored, read without loading a weight (None where there is none on disk)."""
        if self.source == "arch":
            from .arch_replicas import arch_unet_config  # the replicas import this module

            return arch_unet_config(self.id)
        if self.source == "tiny":
            path = ensure_tiny_model(self) / "unet" / "config.json"
        elif self.source in ("local", "toy"):
            path = model_folder(self) / "unet" / "config.json"
        elif self.source == "hub":
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(self.id, "unet/config.json", cache_dir=self.cache_dir, revision=self.revision)
            path = Path(found) if isinstance(found, str) else None
        else:
            return None
        if path is None or not path.is_file():
            return None
        return json.loads(path.read_text())


def torch_dtype(name: str, device: str | torch.device) -> torch.dtype:
    """`auto` is fp32 on CPU (half precision is slow there) and fp16 on CUDA, the precision SD weights ship in."""
    if name == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
    except KeyError:
        raise ConfigError(f"model.dtype {name!r} is not one of auto, float32, float16, bfloat16") from None


def model_folder(spec: ModelSpec) -> Path:
    """A local or toy model's folder; relative ids are relative to the repository."""
    folder = Path(spec.id)
    return folder if folder.is_absolute() else REPO_ROOT / folder


def check_model_available(spec: ModelSpec) -> str:
    """Return what `from_pretrained` should load, or raise MissingAssetError before anything heavy runs."""
    if spec.source == "arch":
        return spec.id
    if spec.source == "tiny":
        return str(ensure_tiny_model(spec))
    if spec.source in ("local", "toy"):
        folder = model_folder(spec)
        if not (folder / "model_index.json").is_file():
            hint = "build it with `make toy-model`" if spec.source == "toy" else "point model.id at a diffusers folder"
            raise MissingAssetError(
                f"model folder {folder} is missing or is not a diffusers pipeline (no model_index.json); {hint}"
            )
        return str(folder)
    return _check_hub_model(spec)


def _check_hub_model(spec: ModelSpec) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE

    cache = spec.cache_dir or HF_HUB_CACHE
    fetch = f"huggingface-cli download {spec.id}" + (f" --revision {spec.revision}" if spec.revision else "")
    try:
        snapshot_download(
            spec.id,
            revision=spec.revision,
            cache_dir=spec.cache_dir,
            local_files_only=True,
            allow_patterns=["model_index.json"],
        )
        return spec.id
    except Exception as missing:  # noqa: BLE001 - any lookup failure means "not in the cache"
        if HF_HUB_OFFLINE or os.environ.get("RESPODIFF_OFFLINE"):
            raise MissingAssetError(
                f"model {spec.id!r} (revision {spec.revision or 'main'}) is not in the Hugging Face cache "
                f"{cache} and the Hub is offline. Fetch it on a machine with network access: `{fetch}` "
                "(accept the model licence and run `huggingface-cli login` first where the Hub asks for it), "
                "or set model.source=local and model.id=<folder>."
            ) from missing
    try:  # online: one small request tells whether the id exists before the multi-GB download starts
        snapshot_download(spec.id, revision=spec.revision, cache_dir=spec.cache_dir, allow_patterns=["model_index.json"])
    except Exception as failure:  # noqa: BLE001
        raise MissingAssetError(
            f"model {spec.id!r} could not be fetched from the Hub into {cache} ({type(failure).__name__}: "
            f"{failure}). Check the id and your network, or fetch it with `{fetch}`."
        ) from failure
    return spec.id


def load_pipeline(spec: ModelSpec, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """The diffusers pipeline with PROTOCOL.md's DDIM scheduler, on `device`, progress bars off."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    location = check_model_available(spec)
    dtype = dtype or torch_dtype(spec.dtype, device)
    if spec.source == "arch":
        from .arch_replicas import build_arch_pipeline  # the replicas import this module

        pipe = build_arch_pipeline(spec.id, dtype=dtype)
    else:
        options: dict[str, Any] = dict(dtype=dtype)
        if spec.source == "hub":
            options.update(revision=spec.revision, variant=spec.variant, cache_dir=spec.cache_dir)
        if spec.arch == "sd":
            pipeline_class = StableDiffusionPipeline
            # The paper's numbers are measured without the safety checker; not loading it also saves 1.2 GB.
            options.update(safety_checker=None, requires_safety_checker=False, feature_extractor=None)
        else:
            pipeline_class = StableDiffusionXLPipeline
        pipe = pipeline_class.from_pretrained(location, **options)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, **DDIM_SETTINGS)
    for component in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if component is not None:
            component.requires_grad_(False).eval()
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd_pipeline(vae, text_encoder, tokenizer, unet, scheduler):
    """A StableDiffusionPipeline from built components, without a safety checker (as load_pipeline loads one)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# ---------------------------------------------------------------------------------------------------------------
# The tiny model: components from small configs with fixed seeds, written with save_pretrained.


def ensure_tiny_model(spec: ModelSpec) -> Path:
    """Build the tiny model once into the cache (deterministic), then load it like any other folder."""
    root = Path(spec.cache_dir) if spec.cache_dir else default_cache_dir()
    folder = root / "tiny" / f"{spec.arch}-v{TINY_VERSION}"
    if not (folder / "model_index.json").is_file():
        build_tiny_model(folder, arch=spec.arch)
    return folder


def build_tiny_model(folder: str | os.PathLike, arch: str = "sd") -> Path:
    """Write a tiny random-weight SD (or SDXL) pipeline in `save_pretrained` layout; same output for same arch."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from .tokenizer import vocab_size, write_clip_tokenizer

    folder = Path(folder)
    staging = temporary_sibling(folder)
    tokenizer_dir = write_clip_tokenizer(staging / "_tokenizer", TINY_WORDS)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    text_config = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size(tokenizer_dir),
    )
    scheduler = DDIMScheduler(**DDIM_SETTINGS)
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=32,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    if arch == "sd":
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            **TINY_UNET,
            cross_attention_dim=32,
        )
        pipe = sd_pipeline(vae, text_encoder, tokenizer, unet, scheduler)
    else:
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            **TINY_UNET,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
            cross_attention_dim=64,
        )
        torch.manual_seed(0)
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_config, projection_dim=32))
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
        )
    pipe.save_pretrained(staging)
    _remove_tree(staging / "_tokenizer")
    # Publish by rename so a crash mid-write never leaves a half-built folder that looks finished.
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        _remove_tree(folder)
    os.replace(staging, folder)
    return folder


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
