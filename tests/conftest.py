"""Shared fixtures: the tiny SD and SDXL pipelines, built once per session into a temporary cache.

The pipelines are shared across tests: a test that attaches an h-space edit must clear or remove it again
(`HSpaceEditor(pipe.unet).remove()`), and no test may change weights or the scheduler in place.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from respodiff.models import ModelSpec, load_pipeline

TINY_RESOLUTION = 32  # latents 16 x 16, h-space (64, 8, 8)


def tiny_spec(cache_dir, arch: str = "sd") -> ModelSpec:
    return ModelSpec(
        name="tiny", source="tiny", id="tiny", arch=arch, resolution=TINY_RESOLUTION, cache_dir=str(cache_dir)
    )


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory):
    """Where the tiny models are written (models/tiny/<arch>-v<N>), once per test session."""
    return tmp_path_factory.mktemp("respodiff-cache")


@pytest.fixture(scope="session")
def tiny_pipe(tiny_cache_dir):
    """The tiny Stable Diffusion pipeline on CPU in fp32, loaded through `load_pipeline` like a Hub model."""
    return load_pipeline(tiny_spec(tiny_cache_dir, "sd"))


@pytest.fixture(scope="session")
def tiny_sdxl_pipe(tiny_cache_dir):
    """The tiny SDXL pipeline on CPU in fp32."""
    return load_pipeline(tiny_spec(tiny_cache_dir, "sdxl"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Outputs, cache and an empty HF home for the `run.py` subprocesses of one test module."""
    root = tmp_path_factory.mktemp("end-to-end")
    for name in ("outputs", "cache", "hf"):
        (root / name).mkdir()
    return root
