"""The models the speed benchmark runs: ours (as stage=train/generate load it) and the naive loops' fp32 copy.

Both come from one diffusers folder on disk, so they hold the same weights: the tiny model's cache folder, or, for
an architecture replica (random weights), a folder the replica is saved to once, which is also what the naive
generation loop reloads for every image, as a script loading a Hub model from its cache would.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from respodiff.arch_replicas import build_arch_pipeline
from respodiff.hspace import hspace_shape
from respodiff.models import (
    REPO_ROOT,
    ModelSpec,
    check_model_available,
    load_pipeline,
    torch_dtype,
)


@dataclass
class Models:
    spec: ModelSpec
    folder: Path
    ours: object  # the pipeline our trainer and engine run, on the device, in the model config's dtype
    naive: object  # the naive training loop's fp32 pipeline; kept on the CPU between its turns on a GPU
    device: torch.device
    dtype: torch.dtype
    cleanup: Path | None = None  # a temporary folder to delete at the end

    @property
    def latent_size(self) -> int:
        return self.spec.resolution // self.ours.vae_scale_factor

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.ours.unet.config.in_channels, self.latent_size, self.latent_size)

    @property
    def h_shape(self) -> tuple[int, int, int]:
        return hspace_shape(self.ours.unet, self.latent_size)

    def local_spec(self, dtype: str) -> ModelSpec:
        return ModelSpec(name=self.spec.name, source="local", id=str(self.folder), resolution=self.spec.resolution,
                         dtype=dtype)  # fmt: skip

    def load_for_naive_generation(self):
        """A fresh pipeline from disk in our dtype: the naive generation loop differs only in batching and loading."""
        return load_pipeline(self.local_spec("auto"), device=self.device, dtype=self.dtype)

    def close(self) -> None:
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)


def model_spec(name: str, resolution: int | None, cache_dir: str | None) -> ModelSpec:
    """The `model=<name>` config group's spec (conf/model/<name>.yaml), without Hydra."""
    path = REPO_ROOT / "conf" / "model" / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise SystemExit(f"no model config {path}; available: {available}")
    config = OmegaConf.load(path)
    config.cache_dir = cache_dir  # the file interpolates ${paths.cache_dir}, which only Hydra resolves
    if resolution is not None:
        config.resolution = resolution
    return ModelSpec.from_config(config)


def load_models(spec: ModelSpec, device: torch.device, channels_last: bool = False) -> Models:
    """Ours on the device in the config's dtype (fp16 on CUDA for `auto`); the naive loops' copy in fp32."""
    cleanup = None
    if spec.source == "arch":
        cleanup = Path(tempfile.mkdtemp(prefix=f"respodiff-speed-{spec.id}-"))
        folder = cleanup / spec.id
        # Saved in half precision: half the disk and load time; the fp32 copy upcasts the same rounded weights.
        build_arch_pipeline(spec.id, dtype=torch.float32).to(dtype=torch.float16).save_pretrained(folder)
    else:
        folder = Path(check_model_available(spec))
    dtype = torch_dtype(spec.dtype, device)
    models = Models(spec, folder, None, None, device, dtype, cleanup)
    models.ours = load_pipeline(models.local_spec(spec.dtype), device=device, dtype=dtype)
    models.naive = load_pipeline(models.local_spec("float32"), device="cpu", dtype=torch.float32)
    if channels_last:
        models.ours.unet.to(memory_format=torch.channels_last)
        models.ours.vae.to(memory_format=torch.channels_last)
    return models


def compile_unet(unet) -> None:
    """Regional compilation (diffusers' recipe): each transformer block and each ResNet block on its own.

    The h-space hook on `mid_block` stays eager Python, so a new edit never invalidates a compiled graph, and all
    blocks of one class share compiled code. The reverse process changes the row count from step to step, so the
    recompile limit is raised for the dynamic-shape recompilations that follow.
    """
    import torch._dynamo
    from diffusers.models.resnet import ResnetBlock2D

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
            break
    unet.compile_repeated_blocks()
    for module in unet.modules():
        if isinstance(module, ResnetBlock2D):
            module.compile()
