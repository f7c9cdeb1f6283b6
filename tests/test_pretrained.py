"""The public API (respodiff.HSpaceModules) on stock pipelines: the same pixels as the suite's own generation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from respodiff import HSpaceModules
from respodiff.errors import CheckpointMismatchError, ConfigError
from respodiff.generation import ConceptPlan, SamplerSettings, build_manifest, generate
from respodiff.hspace import HSpaceEditor
from respodiff.modules import HSpaceTransform, TransformationSet, unet_record
from respodiff.pretrained import PLAN_HOOK
from respodiff.training import ConceptSpec, TrainSettings, train_transformations

H_SHAPE = (64, 8, 8)
SAMPLER = SamplerSettings(steps=2, guidance_scale=7.5, height=32, width=32, batch_size=64)
TABLE = pd.DataFrame({"prompt_id": ["doctor", "nurse"], "prompt": ["a photo of a doctor", "a nurse"]})
SAMPLES = 2  # per prompt (kept small: every image costs a UNet row on CPU)
CONCEPTS = [
    ConceptSpec("man", "a person", target_prompt="a man", lr_ram=0.05, lr_sam=0.005),
    ConceptSpec("woman", "a person", target_prompt="a woman", lr_ram=0.05, lr_sam=0.005),
]
# Two iterations: modules as the suite trains them, quickly; init_scale 1 makes their effect visible.
QUICK = TrainSettings(iterations=2, batch_size=1, max_step_index=3, init_scale=1.0)


@pytest.fixture(scope="module")
def trained(tiny_pipe, tmp_path_factory) -> Path:
    """A tiny run's modules folder, trained by the suite's trainer."""
    run = tmp_path_factory.mktemp("tiny-run")
    train_transformations(tiny_pipe, CONCEPTS, QUICK, run, "tiny", H_SHAPE)
    return run / "modules"


def constant_set(names, base_model="tiny", seed=10) -> TransformationSet:
    modules = {
        name: {"ram": HSpaceTransform(channels=64, height=8, width=8, init_scale=2.0, seed=seed + index)}
        for index, name in enumerate(names)
    }
    return TransformationSet(modules, {"h_shape": list(H_SHAPE), "base_model": base_model})


def suite_images(pipe, transformations, plan, store: Path, identity="tiny"):
    """The suite's images for TABLE x SAMPLES, all in one batch (one pipeline call, as the API test makes)."""
    manifest = build_manifest("api", TABLE, SAMPLES, plan, SAMPLER)
    finished = generate(pipe, manifest, store, transformations, SAMPLER, model_identity=identity,
                        batch_invariant=False, progress=False)
    return finished, [np.asarray(Image.open(store / path)) for path in finished["path"]]


def call(pipe, seeds, per_prompt=False):
    """One stock pipeline call over the same prompts, seeds and settings as the suite's batch."""
    options = dict(
        generator=[torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds],
        num_inference_steps=SAMPLER.steps, guidance_scale=SAMPLER.guidance_scale, height=SAMPLER.height,
        width=SAMPLER.width, eta=SAMPLER.eta,
    )
    if per_prompt:  # prompt-major, as diffusers lays out prompts x num_images_per_prompt
        images = pipe(prompt=list(TABLE["prompt"]), num_images_per_prompt=SAMPLES, **options).images
    else:
        prompts = [prompt for prompt in TABLE["prompt"] for _ in range(SAMPLES)]
        images = pipe(prompt=prompts, **options).images
    return [np.asarray(image) for image in images]


def is_off(unet) -> bool:
    """No plan hook on the UNet and no edit set (the trainer may leave its idle editor attached)."""
    registry = getattr(unet, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(PLAN_HOOK) is not None:
        return False
    return not HSpaceEditor.is_attached(unet) or HSpaceEditor(unet).current is None


def same(images, reference) -> list[bool]:
    return [np.array_equal(a, b) for a, b in zip(images, reference, strict=True)]


@pytest.mark.parametrize("sampling", ["balanced", "uniform"])
def test_trained_modules_on_a_stock_pipeline_give_the_suites_pixels(tiny_pipe, trained, tmp_path, sampling):
    edit = HSpaceModules.from_pretrained(trained)
    manifest, reference = suite_images(tiny_pipe, edit.sets, ConceptPlan("fair", ["man", "woman"], sampling),
                                       tmp_path / "store")
    seeds = manifest["seed"].to_numpy()  # numpy integers work as seeds too
    with edit.apply(tiny_pipe, sampling=sampling, seed=seeds):
        listed = call(tiny_pipe, seeds)
        per_prompt = call(tiny_pipe, seeds, per_prompt=True)
    assert all(same(listed, reference))
    assert all(same(per_prompt, reference))
    assert is_off(tiny_pipe.unet)  # the `with` block removed the modules
    if sampling == "uniform":
        assert list(manifest["concept"]) != ["man", "woman"] * SAMPLES  # the draw is not a plain alternation


def test_remove_gives_the_base_models_pixels(tiny_pipe, trained, tmp_path):
    manifest, base = suite_images(tiny_pipe, None, ConceptPlan("none"), tmp_path / "base")
    edit = HSpaceModules.from_pretrained(trained)
    applied = edit.apply(tiny_pipe)
    edited = call(tiny_pipe, manifest["seed"])
    applied.remove()
    assert is_off(tiny_pipe.unet)
    assert not any(same(edited, base))
    assert all(same(call(tiny_pipe, manifest["seed"]), base))
    edit.remove(tiny_pipe)  # removing twice is harmless


def test_composition_and_sum_give_the_suites_pixels(tiny_pipe, trained, tmp_path):
    gender = HSpaceModules.from_pretrained(trained)
    race = HSpaceModules(constant_set(["black", "white"]))
    both = HSpaceModules.combine(gender=gender, race=race)
    assert both.concepts == ["gender/man", "gender/woman", "race/black", "race/white"]
    weights = {"gender/woman": 0.6, "race/black": 0.4}
    manifest, reference = suite_images(tiny_pipe, both.sets, ConceptPlan("compose", weights=weights),
                                       tmp_path / "compose")
    with both.apply(tiny_pipe, weights=weights):
        assert all(same(call(tiny_pipe, manifest["seed"]), reference))

    manifest, reference = suite_images(tiny_pipe, gender.sets, ConceptPlan("sum", ["man", "woman"]), tmp_path / "sum")
    with gender.apply(tiny_pipe, mode="sum"):
        assert all(same(call(tiny_pipe, manifest["seed"]), reference))
    assert is_off(tiny_pipe.unet)


def test_safety_modules_are_summed_by_default_and_set_names_select_concepts():
    safety = constant_set(["violence", "sexual"])
    safety.metadata["kind"] = "safety"
    plan = HSpaceModules(safety).plan()
    assert (plan.mode, plan.concepts) == ("sum", ["violence", "sexual"])
    both = HSpaceModules.combine(gender=HSpaceModules(constant_set(["man", "woman"])), safety=HSpaceModules(safety))
    assert both.plan("gender").concepts == ["gender/man", "gender/woman"]
    assert both.plan(["safety/violence"]).mode == "fair"


def test_sdxl_pipeline_gets_the_suites_pixels(tiny_sdxl_pipe, tmp_path):
    edit = HSpaceModules(constant_set(["man", "woman"], base_model="tiny-sdxl"))
    manifest, reference = suite_images(tiny_sdxl_pipe, edit.sets, ConceptPlan("fair", ["man", "woman"]),
                                       tmp_path / "sdxl", identity="tiny-sdxl")
    with edit.apply(tiny_sdxl_pipe):
        assert all(same(call(tiny_sdxl_pipe, manifest["seed"]), reference))
    assert is_off(tiny_sdxl_pipe.unet)


def test_modules_for_another_h_space_are_refused_at_the_call(tiny_pipe):
    edit = HSpaceModules(constant_set(["man", "woman"]))
    with edit.apply(tiny_pipe), pytest.raises(CheckpointMismatchError, match=r"\(64, 12, 12\)"):
        tiny_pipe("a nurse", num_inference_steps=1, height=48, width=48)  # h-space 12 x 12, modules are 8 x 8
    assert is_off(tiny_pipe.unet)


def test_modules_for_another_unet_are_refused_naming_both(tiny_pipe, tiny_sdxl_pipe):
    tset = constant_set(["man", "woman"])
    tset.metadata.update(unet_record(tiny_sdxl_pipe.unet))
    with pytest.raises(CheckpointMismatchError, match="addition_embed_type 'text_time' vs None"):
        HSpaceModules(tset).apply(tiny_pipe)
    del tset.metadata["unet_config"]  # a record with the hash only
    with pytest.raises(CheckpointMismatchError, match="config sha256"):
        HSpaceModules(tset).apply(tiny_pipe)
    tset.metadata.update(unet_record(tiny_pipe.unet))
    HSpaceModules(tset).apply(tiny_pipe).remove()
    assert is_off(tiny_pipe.unet)


def test_bad_seeds_are_config_errors(tiny_pipe):
    edit = HSpaceModules(constant_set(["man", "woman"]))
    with pytest.raises(ConfigError, match="seed="):
        edit.apply(tiny_pipe, sampling="uniform")
    with edit.apply(tiny_pipe, sampling="uniform", seed=[1, 2, 3]), pytest.raises(ConfigError, match="3 seeds"):
        tiny_pipe("a nurse", num_inference_steps=1, num_images_per_prompt=2)
    with pytest.raises(ConfigError, match="unknown concept"):
        edit.apply(tiny_pipe, concepts=["child"])
    assert is_off(tiny_pipe.unet)
