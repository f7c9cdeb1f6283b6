"""Generation engine, in one process: manifests and plans, bit-identity, per-image concepts, resume, refusals."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers.configuration_utils import FrozenDict
from PIL import Image

from respodiff.errors import CheckpointMismatchError, ConfigError
from respodiff.generation import (
    ConceptPlan,
    SamplerSettings,
    build_manifest,
    generate,
    generation_fingerprint,
    is_finished,
    mark_finished,
    read_manifest,
)
from respodiff.hspace import HSpaceEditor
from respodiff.io import module_digest
from respodiff.modules import HSpaceTransform, TransformationSet

_spec = importlib.util.spec_from_file_location(
    "generate_tiny", Path(__file__).parent / "scripts" / "generate_tiny.py"
)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

SAMPLER = worker.SAMPLER
TABLE = pd.DataFrame({"prompt_id": ["doctor", "nurse"], "prompt": ["a photo of a doctor", "a nurse"]})


def pixels(store: Path, manifest: pd.DataFrame) -> dict[str, np.ndarray]:
    return {row.image_id: np.asarray(Image.open(store / row.path)) for row in manifest.itertuples()}


class UNetCalls:
    """Counts UNet forward calls while installed."""

    def __init__(self, unet):
        self.count = 0
        self.handle = unet.register_forward_pre_hook(self._hook)

    def _hook(self, *_):
        self.count += 1

    def remove(self):
        self.handle.remove()


@pytest.fixture
def unet_calls(tiny_pipe):
    calls = UNetCalls(tiny_pipe.unet)
    yield calls
    calls.remove()


def run(pipe, manifest, store, transformations=None, sampler=SAMPLER, **options):
    options.setdefault("model_identity", "tiny")
    options.setdefault("progress", False)
    return generate(pipe, manifest, store, transformations, sampler, **options)


def constant_set(**scales: float) -> TransformationSet:
    """Constant concepts by name -> init scale (0 gives a zero delta)."""
    modules = {
        name: {
            "ram": HSpaceTransform(
                channels=64,
                height=8,
                width=8,
                init="zeros" if scale == 0 else "uniform",
                init_scale=scale or 1.0,
                seed=i,
            )
        }
        for i, (name, scale) in enumerate(scales.items())
    }
    return TransformationSet(modules, {"h_shape": list(worker.H_SHAPE), "base_model": "tiny"})


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def test_batch_size_does_not_change_images(tiny_pipe, tmp_path):
    job, modules = worker.tiny_job()
    sampler = SamplerSettings(
        **{**SAMPLER.__dict__, "eta": 0.5}
    )  # eta > 0 also draws noise from each generator
    manifest = build_manifest(
        "tiny",
        job.drop_duplicates("prompt_id")[["prompt_id", "prompt"]],
        4,
        ConceptPlan("fair", ["man", "woman"]),
        sampler,
    )
    # With batched pipeline calls (batch_invariant=False) 4 of these 16 images differ between batch 1 and batch 4
    # in one 8-bit value each (torch 2.15, CPU): this set is large enough to see CPU kernels' batch dependence.
    one = run(
        tiny_pipe,
        manifest,
        tmp_path / "b1",
        modules,
        SamplerSettings(**{**sampler.__dict__, "batch_size": 1}),
    )
    four = run(
        tiny_pipe,
        manifest,
        tmp_path / "b4",
        modules,
        SamplerSettings(**{**sampler.__dict__, "batch_size": 4}),
    )
    assert (one["status"] == "done").all() and (four["status"] == "done").all()
    a, b = pixels(tmp_path / "b1", one), pixels(tmp_path / "b4", four)
    assert all(np.array_equal(a[key], b[key]) for key in a)
    assert len({image.tobytes() for image in a.values()}) == len(a)  # distinct seeds give distinct images


def test_concept_rows_apply_their_own_transformation(tiny_pipe, tmp_path):
    modules = constant_set(big=3.0, zero=0.0)
    fair = build_manifest("t", TABLE, 2, ConceptPlan("fair", ["big", "zero"]), SAMPLER)
    base = build_manifest("t", TABLE, 2, ConceptPlan(), SAMPLER)
    # Batched mode with mixed rows in one call: each row must still get only its own weights.
    batched = dict(batch_invariant=False)
    edited = pixels(tmp_path / "fair", run(tiny_pipe, fair, tmp_path / "fair", modules, **batched))
    plain = pixels(tmp_path / "none", run(tiny_pipe, base, tmp_path / "none", None, **batched))
    for row in fair.itertuples():
        if row.concept == "big":
            assert np.abs(edited[row.image_id].astype(int) - plain[row.image_id]).mean() > 1.0
        else:
            assert np.array_equal(edited[row.image_id], plain[row.image_id])

    # The same image with the editor set by hand around a plain pipeline call.
    row = fair[fair["concept"] == "big"].iloc[0]
    editor = HSpaceEditor(tiny_pipe.unet)
    try:
        with editor.editing([modules.transformation("big")], torch.tensor([[1.0]]), cfg_half=True):
            by_hand = tiny_pipe(
                prompt=[row.prompt],
                generator=[torch.Generator().manual_seed(int(row.seed))],
                num_inference_steps=SAMPLER.steps,
                guidance_scale=SAMPLER.guidance_scale,
                height=32,
                width=32,
                output_type="pil",
            ).images[0]
    finally:
        editor.remove()
    generated = pixels(tmp_path / "inv", run(tiny_pipe, fair, tmp_path / "inv", modules))[row.image_id]
    assert np.array_equal(np.asarray(by_hand), generated)


def test_composition_of_two_named_sets(tiny_pipe, tmp_path):
    gender, race = constant_set(woman=2.0), constant_set(black=2.0)
    plan = ConceptPlan("compose", weights={"gender/woman": 0.6, "race/black": 0.4})
    manifest = build_manifest("t", TABLE.iloc[:1], 1, plan, SAMPLER)
    out = run(tiny_pipe, manifest, tmp_path / "s", {"gender": gender, "race": race})
    row = manifest.iloc[0]
    editor = HSpaceEditor(tiny_pipe.unet)
    try:
        transformations = [gender.transformation("woman"), race.transformation("black")]
        with editor.editing(transformations, torch.tensor([[0.6, 0.4]]), cfg_half=True):
            by_hand = tiny_pipe(
                prompt=[row.prompt],
                generator=[torch.Generator().manual_seed(int(row.seed))],
                num_inference_steps=3,
                guidance_scale=7.5,
                height=32,
                width=32,
            ).images[0]
    finally:
        editor.remove()
    assert np.array_equal(np.asarray(by_hand), pixels(tmp_path / "s", out)[row.image_id])


def test_damaged_images_are_regenerated_and_finished_store_does_no_work(
    tiny_pipe, tmp_path, unet_calls, caplog
):
    manifest, modules = worker.tiny_job(samples_per_prompt=2)
    store = tmp_path / "store"
    first = run(tiny_pipe, manifest, store, modules)
    before = pixels(store, first)
    per_image = unet_calls.count // len(manifest)

    truncated, deleted, unrecorded = (store / p for p in first["path"].iloc[[1, 4, 6]])
    truncated.write_bytes(truncated.read_bytes()[:-40])
    deleted.unlink()
    recorded = read_manifest(store)
    recorded.loc[6, "status"] = "pending"  # a crash between writing an image and recording it
    recorded.to_parquet(store / "manifest.parquet")

    unet_calls.count = 0
    second = run(tiny_pipe, manifest, store, modules)
    assert (
        unet_calls.count == 2 * per_image
    )  # only the truncated and the deleted image; the unrecorded one is kept
    assert (second["status"] == "done").all() and (read_manifest(store)["status"] == "done").all()
    assert all(np.array_equal(before[k], v) for k, v in pixels(store, second).items())
    assert unrecorded.is_file()

    unet_calls.count = 0
    with caplog.at_level(logging.INFO, logger="respodiff.generation"):
        run(tiny_pipe, manifest, store, modules)
    assert unet_calls.count == 0
    assert f"all {len(manifest)} images present; nothing to generate" in caplog.text


def test_batched_mode_resume_is_bit_identical(tiny_pipe, tmp_path):
    manifest, modules = worker.tiny_job(samples_per_prompt=2)
    store = tmp_path / "store"
    first = run(tiny_pipe, manifest, store, modules, batch_invariant=False)
    before = pixels(store, first)
    (store / first["path"].iloc[4]).unlink()  # the middle of the second batch of 3
    second = run(tiny_pipe, manifest, store, modules, batch_invariant=False)
    assert all(np.array_equal(before[k], v) for k, v in pixels(store, second).items())


def test_store_of_another_configuration_is_refused(tiny_pipe, tmp_path, unet_calls):
    manifest, modules = worker.tiny_job(samples_per_prompt=1)
    store = tmp_path / "store"
    run(tiny_pipe, manifest, store, modules)
    unet_calls.count = 0
    other_sampler = SamplerSettings(**{**SAMPLER.__dict__, "steps": 4})
    other_manifest = build_manifest(
        "tiny", manifest[["prompt_id", "prompt"]], 1, ConceptPlan("fair", ["man", "woman"]), other_sampler
    )
    with pytest.raises(
        CheckpointMismatchError, match=r"another configuration \(differs in: images\).*delete the folder"
    ):
        run(tiny_pipe, other_manifest, store, modules, sampler=other_sampler)
    with pytest.raises(CheckpointMismatchError, match="differs in: modules"):
        run(tiny_pipe, manifest, store, worker.tiny_transformations(scale=1.0))
    with pytest.raises(CheckpointMismatchError, match="differs in: model"):
        run(tiny_pipe, manifest, store, modules, model_identity=None)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointMismatchError, match="not an image store"):
        run(tiny_pipe, manifest, foreign, modules)
    # A smaller batch (e.g. after running out of memory) is the same configuration.
    run(tiny_pipe, manifest, store, modules, sampler=SamplerSettings(**{**SAMPLER.__dict__, "batch_size": 1}))
    assert unet_calls.count == 0


def test_errors_come_before_any_rendering(tiny_pipe, tmp_path, unet_calls):
    manifest, modules = worker.tiny_job(samples_per_prompt=1)
    unknown = build_manifest("tiny", TABLE, 1, ConceptPlan("fair", ["woman", "asian"]), SAMPLER)
    with pytest.raises(ConfigError, match=r"unknown concept\(s\) \['asian'\].*\['man', 'woman'\]"):
        run(tiny_pipe, unknown, tmp_path / "a", modules)
    with pytest.raises(ConfigError, match="no modules were given"):
        run(tiny_pipe, manifest, tmp_path / "b", None)
    with pytest.raises(ConfigError, match=r"unknown concept.*gender/man"):
        run(tiny_pipe, manifest, tmp_path / "c", {"gender": modules})
    other_resolution = TransformationSet(modules.modules, {"h_shape": [64, 16, 16], "base_model": "tiny"})
    with pytest.raises(CheckpointMismatchError, match="another model or resolution"):
        run(tiny_pipe, manifest, tmp_path / "d", other_resolution)
    with pytest.raises(CheckpointMismatchError, match="trained on base model 'tiny'"):
        run(tiny_pipe, manifest, tmp_path / "e", modules, model_identity="CompVis/stable-diffusion-v1-4")
    with pytest.raises(ConfigError, match="generation was asked for steps=5"):
        run(
            tiny_pipe,
            manifest,
            tmp_path / "f",
            modules,
            sampler=SamplerSettings(**{**SAMPLER.__dict__, "steps": 5}),
        )
    assert unet_calls.count == 0
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_module_digest_ignores_bookkeeping_in_set_order():
    module = HSpaceTransform(channels=64, height=8, width=8, seed=3)
    before = module_digest(module)
    config = dict(module.config)
    config["_use_default_values"] = list(reversed(config["_use_default_values"]))
    module._internal_dict = FrozenDict(config)  # what another process's string hashing may produce
    assert module_digest(module) == before
    assert module_digest(HSpaceTransform(channels=64, height=8, width=8, seed=4)) != before


def test_sdxl_and_negative_prompts(tiny_pipe, tiny_sdxl_pipe, tmp_path):
    _, modules = worker.tiny_job()
    plan = ConceptPlan("fair", ["man", "woman"])
    manifest = build_manifest("t", TABLE.iloc[:1], 2, plan, SAMPLER)
    xl = run(tiny_sdxl_pipe, manifest, tmp_path / "xl", modules)
    images = pixels(tmp_path / "xl", xl)
    assert len({image.tobytes() for image in images.values()}) == 2

    negative = build_manifest("t", TABLE.iloc[:1], 2, plan, SAMPLER, negative_prompt="a man")
    with_negative = pixels(tmp_path / "neg", run(tiny_pipe, negative, tmp_path / "neg", modules))
    without = pixels(tmp_path / "pos", run(tiny_pipe, manifest, tmp_path / "pos", modules))
    assert all(not np.array_equal(with_negative[key], without[key]) for key in without)


def test_a_failed_write_records_only_complete_images(tiny_pipe, tmp_path, monkeypatch):
    import respodiff.generation.render as render

    manifest, modules = worker.tiny_job(samples_per_prompt=2)
    store = tmp_path / "store"
    real_write, calls = render.write_image, []

    def failing_write(path, image, text):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_write(path, image, text)

    monkeypatch.setattr(render, "write_image", failing_write)
    with pytest.raises(OSError, match="disk full"):
        run(tiny_pipe, manifest, store, modules, flush_every=100)
    recorded = read_manifest(store)
    done = recorded.loc[recorded["status"] == "done", "path"].tolist()
    assert len(done) >= 2 and all((store / path).is_file() for path in done)
    assert not (store / calls[2]).exists()

    monkeypatch.setattr(render, "write_image", real_write)
    assert (run(tiny_pipe, manifest, store, modules)["status"] == "done").all()


# ---------------------------------------------------------------------------------------------------------------
# Is a store finished? (what the stages ask before loading a model)

CONTEXT = {
    "model": {"id": "tiny"},
    "device": "cpu",
    "method": {"kind": "respodiff"},
    "generation": {"model_identity": "tiny"},
    "modules": None,
}


def test_generation_fingerprint_is_stable_and_keyed_by_its_context():
    manifest = build_manifest("tiny", TABLE, 2, ConceptPlan("fair", ["man", "woman"]), SAMPLER)
    # The value the stages computed before the fingerprint moved here: existing finished stores stay finished.
    expected = "fb4684cca903b813cf0f595fe2e4c573646ed6f3fd9c077f2b7e1df7ade261eb"
    assert generation_fingerprint(manifest, CONTEXT) == expected
    assert generation_fingerprint(manifest, dict(reversed(CONTEXT.items()))) == expected
    assert generation_fingerprint(manifest, {**CONTEXT, "device": "cuda"}) != expected
    with pytest.raises(ValueError, match="may not set"):
        generation_fingerprint(manifest, {**CONTEXT, "engine": 0})


def test_a_finished_store_is_recognised_and_nothing_else_is(tiny_pipe, tmp_path):
    manifest, modules = worker.tiny_job(samples_per_prompt=1)
    store = tmp_path / "store"
    fingerprint = generation_fingerprint(manifest, CONTEXT)
    assert not is_finished(store, manifest, fingerprint)  # no store yet
    finished = run(tiny_pipe, manifest, store, modules)
    assert not is_finished(store, manifest, fingerprint)  # complete, but nobody recorded it
    mark_finished(store, fingerprint)
    assert (tmp_path / "store.generated.json").is_file()  # beside the store: its folder belongs to the engine
    assert is_finished(store, manifest, fingerprint)

    assert not is_finished(store, manifest, generation_fingerprint(manifest, {**CONTEXT, "modules": "retrained"}))
    more, _ = worker.tiny_job(samples_per_prompt=2)
    assert not is_finished(store, more, fingerprint)

    image = store / finished["path"].iloc[1]
    content = image.read_bytes()
    image.write_bytes(content[:-40])
    assert not is_finished(store, manifest, fingerprint)
    image.unlink()
    assert not is_finished(store, manifest, fingerprint)
    image.write_bytes(content)
    assert is_finished(store, manifest, fingerprint)

    recorded = read_manifest(store)
    recorded.loc[2, "status"] = "pending"
    recorded.to_parquet(store / "manifest.parquet")
    assert not is_finished(store, manifest, fingerprint)
    recorded.loc[2, "status"] = "done"
    recorded.to_parquet(store / "manifest.parquet")
    assert is_finished(store, manifest, fingerprint)

    (tmp_path / "store.generated.json").write_text("{not json")
    assert not is_finished(store, manifest, fingerprint)
