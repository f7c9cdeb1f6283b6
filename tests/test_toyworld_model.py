"""The committed toy model (models/toy): loads as a StableDiffusionPipeline, fits the size budget,
and generates 32 px images. Skipped when the folder has not been built yet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from respodiff.toyworld.fid_features import DEFAULT_DIR as FID_DIR
from respodiff.toyworld.tokenizer import MODEL_MAX_LENGTH
from respodiff.toyworld.world import world_words

TOY = Path(__file__).resolve().parents[1] / "models" / "toy"
needs_model = pytest.mark.skipif(not (TOY / "model_index.json").exists(), reason="models/toy not built")


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


@needs_model
def test_toy_model_loads_and_is_small():
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    assert _size_mb(TOY) <= 30.0
    pipe = StableDiffusionPipeline.from_pretrained(TOY)
    assert pipe.safety_checker is None
    assert isinstance(pipe.scheduler, DDIMScheduler)
    cfg = pipe.scheduler.config
    assert (cfg.beta_start, cfg.beta_end, cfg.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert (cfg.clip_sample, cfg.set_alpha_to_one, cfg.steps_offset, cfg.num_train_timesteps) == (False, False, 1, 1000)
    assert pipe.tokenizer.model_max_length == MODEL_MAX_LENGTH
    for w in world_words():
        assert len(pipe.tokenizer(w, add_special_tokens=False).input_ids) == 1, w
    assert (TOY / "tokenizer" / "vocab.json").exists() and (TOY / "tokenizer" / "merges.txt").exists()
    out = pipe(["photo of a doctor", "violence"], num_inference_steps=3, guidance_scale=7.5, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 32, 32, 3)
    assert np.isfinite(out.images).all()


@pytest.mark.skipif(not (FID_DIR / "model.safetensors").exists(), reason="toy FID features not built")
def test_toy_fid_features():
    from respodiff.toyworld.fid_features import CleanFidToyExtractor, toy_fid_features
    from respodiff.toyworld.renderer import render_many
    from respodiff.toyworld.world import sample_scenes

    images = render_many(sample_scenes(64, seed=2))
    f = toy_fid_features(images)
    assert f.shape == (64, 128) and f.dtype == np.float64
    np.testing.assert_array_equal(f, toy_fid_features(images))
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    np.testing.assert_allclose(CleanFidToyExtractor()(batch).numpy(), f, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        toy_fid_features(images.astype(np.float32))


def test_toy_model_lr_schedule_warms_up_decays_and_restarts_for_refinement():
    from types import SimpleNamespace

    from respodiff.toyworld.train_toy_model import unet_lr

    args = SimpleNamespace(lr=1e-3, unet_steps=1000, refine_steps=200, refine_lr_fraction=0.4)
    main = [unet_lr(args, step) for step in range(1000)]
    assert main[0] < main[100] < main[299] and max(main) <= args.lr  # linear warm-up over 300 steps
    assert unet_lr(args, 999) == pytest.approx(0.1 * args.lr, rel=1e-3)  # cosine to 10% at the end of the main run
    assert unet_lr(args, 1000) == pytest.approx(0.4 * args.lr)  # refinement restarts at its fraction
    refine = [unet_lr(args, step) for step in range(1000, 1200)]
    assert all(a >= b for a, b in zip(refine, refine[1:])) and refine[-1] == pytest.approx(0.1 * args.lr, rel=1e-3)
