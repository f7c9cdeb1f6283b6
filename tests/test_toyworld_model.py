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


def test_refinement_weights_favour_captions_naming_a_race_and_a_kind():
    from respodiff.toyworld.train_toy_model import refine_weights

    captions = ["a person", "photo of a builder", "a tan person", "photo of a tan builder", "a dark woman nurse",
                "a woman", "portrait of a tan"]
    w = refine_weights(captions, race_weight=4.0, kind_race_weight=12.0)
    assert w.tolist() == [1.0, 1.0, 4.0, 12.0, 12.0, 1.0, 4.0]
    # Whole words only: "tandem" or "paler" do not name a race.
    assert refine_weights(["a tandem builder", "a paler doctor"], 4.0, 12.0).tolist() == [1.0, 1.0]


@needs_model
def test_model_check_reports_every_race_named_with_every_kind():
    from diffusers import StableDiffusionPipeline

    from respodiff.toyworld.check_toy_model import race_named_kinds
    from respodiff.toyworld.world import KINDS, RACES

    pipe = StableDiffusionPipeline.from_pretrained(TOY)
    pipe.set_progress_bar_config(disable=True)
    report = race_named_kinds(pipe, steps=2, per_prompt=1, guidance=7.5)
    assert set(report) == {f"a {r} {k}" for r in RACES for k in KINDS}
    for row in report.values():
        assert set(row) == {"race_share", "kind_accuracy"}
        assert row["race_share"] in (0.0, 1.0) and row["kind_accuracy"] in (0.0, 1.0)


@needs_model
def test_model_check_reports_tracking_at_each_guidance_scale():
    from diffusers import StableDiffusionPipeline

    from respodiff.toyworld.check_toy_model import tracking_by_guidance
    from respodiff.toyworld.world import KINDS

    pipe = StableDiffusionPipeline.from_pretrained(TOY)
    pipe.set_progress_bar_config(disable=True)
    report = tracking_by_guidance(pipe, steps=2, per_prompt=2, scales=[1.0, 7.5])
    assert list(report) == ["1", "7.5"]
    for row in report.values():
        assert set(row["drawn_woman_share"]) == set(KINDS)
        assert 0.0 <= row["largest_mild_gap"] <= 1.0 and row["diversity"] >= 0.0
    # The same seeds at both scales: guidance changes what is drawn from the same noise.
    assert report["1"]["drawn_woman_share"] != report["7.5"]["drawn_woman_share"]


@needs_model
def test_model_check_can_guide_only_the_later_steps():
    from diffusers import StableDiffusionPipeline

    from respodiff.toyworld.check_toy_model import generate

    pipe = StableDiffusionPipeline.from_pretrained(TOY)
    pipe.set_progress_bar_config(disable=True)
    images = {k: generate(pipe, ["photo of a chef"], 2, 4, 7.5, "late", unguided_steps=k) for k in (0, 2, 4)}
    unguided = generate(pipe, ["photo of a chef"], 2, 4, 1.0, "late")
    assert np.abs(images[4] - unguided).max() < 1e-4  # every step unguided: the model's own distribution
    assert np.abs(images[2] - images[0]).max() > 1e-2 and np.abs(images[2] - unguided).max() > 1e-2


@needs_model
def test_settling_reports_when_each_attribute_agrees_with_the_final_image():
    from diffusers import StableDiffusionPipeline

    from respodiff.toyworld.guidance_probe import ATTRIBUTES, settling

    pipe = StableDiffusionPipeline.from_pretrained(TOY)
    report = settling(pipe, ["photo of a chef"], n=3, steps=3, scales=[1.0, 7.5])
    assert set(report) == {"1", "7.5"}
    for rows in (report["1"]["photo of a chef"], report["7.5"]["photo of a chef"]):
        assert set(rows) == set(ATTRIBUTES)
        for row in rows.values():
            assert len(row["agreement_by_step"]) == 3 and row["agreement_by_step"][-1] == 1.0  # the last is final
            assert 0 <= row["settled_at_step"] <= 2


def test_model_check_flags_a_mild_kind_that_collapses_or_drifts():
    from respodiff.toyworld.check_toy_model import planted_tracking
    from respodiff.toyworld.world import GENDER_SKEW, RACE_SKEW

    def per_kind(shares):
        return {k: {"woman_share": shares.get(k, p), "race_shares": list(RACE_SKEW[k])} for k, p in GENDER_SKEW.items()}

    assert planted_tracking(per_kind({}))["mild_kinds_within_tolerance"]
    assert not planted_tracking(per_kind({"painter": 1.0}))["mild_kinds_within_tolerance"]  # collapsed
    assert not planted_tracking(per_kind({"farmer": 0.45}))["mild_kinds_within_tolerance"]  # drifted by 0.25
    # A strongly skewed kind may reach 0 or 1 (its planted share is within a few images of it).
    assert planted_tracking(per_kind({"guard": 0.0}))["mild_kinds_within_tolerance"]


@pytest.mark.skipif(not (FID_DIR / "model.safetensors").exists(), reason="toy FID features not built")
def test_model_check_diversity_of_clean_renders_is_near_its_own_reference():
    from respodiff.toyworld.check_toy_model import diversity_vs_clean
    from respodiff.toyworld.prompts import winobias_toy_table
    from respodiff.toyworld.renderer import render_many
    from respodiff.toyworld.world import Scene

    table = winobias_toy_table().iloc[:4]  # doctor, 4 templates
    same = np.repeat(render_many([Scene("doctor", "man", "pale", False, 0)]), 16, axis=0) / 255.0
    varied = render_many([Scene("doctor", "man", "pale", False, seed) for seed in range(16)]) / 255.0
    collapsed, diverse = diversity_vs_clean(same, table, 4), diversity_vs_clean(varied, table, 4)
    assert collapsed["generated"] < 1e-3 and collapsed["clean_renders"] > 0.05
    # One class's looks move the FID-toy features little (they were trained to read the classes); still clearly > 0.
    assert diverse["generated"] > 0.004 > 100 * collapsed["generated"]
