"""Baselines (respodiff/methods): SLD presets and pipeline, ESD weight loading and refusals, SDisc training and
image reuse, per-image negative prompts, and the engine's pipeline_kwargs seam. Tiny model, CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from respodiff.errors import CheckpointMismatchError, ConfigError, MissingAssetError
from respodiff.generation import ConceptPlan, SamplerSettings, build_manifest, generate
from respodiff.methods import Method, build_method, esd, sld
from respodiff.models import load_pipeline
from respodiff.training import ConceptSpec, SDiscSettings, is_trained, sdisc_record, train_sdisc
from respodiff.training.sdisc import IMAGES_DIR
from tests.conftest import tiny_spec

SAMPLER = SamplerSettings(steps=3, guidance_scale=7.5, height=32, width=32, batch_size=2)
TABLE = pd.DataFrame({"prompt_id": ["doctor", "nurse"], "prompt": ["a photo of a doctor", "a nurse"]})
H_SHAPE = (64, 8, 8)


def method(options: dict, concepts: dict | None = None) -> Method:
    """The Method a run with these method and concept blocks uses."""
    return build_method({"method": options, "concepts": concepts or {"kind": "fairness", "items": {}}})


def render(pipe, store, manifest=None, **options):
    manifest = build_manifest("t", TABLE, 2, ConceptPlan(), SAMPLER) if manifest is None else manifest
    options.setdefault("model_identity", "tiny")
    generate(pipe, manifest, store, options.pop("transformations", None), SAMPLER, progress=False, **options)
    return {row.image_id: np.asarray(Image.open(store / row.path), dtype=np.int16) for row in manifest.itertuples()}


# --- SLD --------------------------------------------------------------------------------------------------------


def test_sld_presets_are_diffusers_safety_config():
    config = sld.safety_config()
    for preset in sld.PRESETS:
        assert sld.sld_arguments({"preset": preset}) == getattr(config, preset.upper())
    weak_200 = sld.sld_arguments({"preset": "weak", "params": {"sld_guidance_scale": 200, "sld_threshold": None}})
    assert weak_200["sld_guidance_scale"] == 200 and weak_200["sld_threshold"] == config.WEAK["sld_threshold"]
    with pytest.raises(ConfigError, match="not one of"):
        sld.sld_arguments({"preset": "extreme"})
    with pytest.raises(ConfigError, match="not SLD arguments"):
        sld.sld_arguments({"preset": "weak", "params": {"sld_scale": 3}})
    with pytest.raises(ConfigError, match="must be > 1"):
        sld.sld_arguments({"preset": "weak", "params": {"sld_guidance_scale": 1}})
    with pytest.raises(ConfigError, match="SDXL"):
        method({"name": "sld_max", "kind": "sld", "preset": "max"}).validate("sdxl")


def test_sld_pipeline_reuses_the_loaded_components(tiny_pipe):
    safe = method({"kind": "sld", "preset": "max", "safety_concept": "violence"}).prepare_pipeline(tiny_pipe)
    assert type(safe).__name__ == "StableDiffusionPipelineSafe"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(safe, name) is getattr(tiny_pipe, name), name
    assert safe.safety_checker is None and safe.safety_concept == "violence"
    assert safe.name_or_path == tiny_pipe.name_or_path


def test_sld_through_the_engine(tiny_pipe, tmp_path):
    base = render(tiny_pipe, tmp_path / "sd")
    safe = method({"kind": "sld", "preset": "max"}).prepare_pipeline(tiny_pipe)
    options = method({"kind": "sld", "preset": "max"}).generation_options("tiny")
    steered = render(safe, tmp_path / "sld", **options)
    assert any(np.abs(steered[key] - base[key]).max() > 8 for key in base), "SLD max must change images"
    record = json.loads((tmp_path / "sld" / "store.json").read_text())["identity"]
    assert record["pipeline"] == "StableDiffusionPipelineSafe"
    assert record["pipeline_kwargs"] == sld.safety_config().MAX
    assert "pipeline_kwargs" not in json.loads((tmp_path / "sd" / "store.json").read_text())["identity"]
    # Warm-up past the last step: SLD never steers, the images are SD's up to rounding of a 3-chunk batch.
    late = render(safe, tmp_path / "late", pipeline_kwargs={**options["pipeline_kwargs"], "sld_warmup_steps": 99})
    assert all(np.abs(late[key] - base[key]).max() <= 2 for key in base)
    # Other SLD arguments are another store: refused, never mixed.
    with pytest.raises(CheckpointMismatchError, match="pipeline_kwargs"):
        render(safe, tmp_path / "sld", pipeline_kwargs=sld.safety_config().MEDIUM)
    with pytest.raises(ConfigError, match="may not set"):
        render(tiny_pipe, tmp_path / "clash", pipeline_kwargs={"guidance_scale": 2.0})


# --- ESD --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def esd_pipe(tiny_cache_dir):
    """A pipeline of its own: ESD changes the UNet's weights, which the shared tiny_pipe must never see."""
    return load_pipeline(tiny_spec(tiny_cache_dir))


@pytest.fixture(scope="module")
def base_state(esd_pipe):
    return {key: value.clone() for key, value in esd_pipe.unet.state_dict().items()}


def esd_state(base_state, seed: int = 1) -> dict[str, torch.Tensor]:
    """The base weights with every cross-attention weight moved (ESD-x fine-tunes those)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        key: value + 0.05 * torch.randn(value.shape, generator=generator) if "attn2" in key else value.clone()
        for key, value in base_state.items()
    }


def restore(pipe, base_state):
    pipe.unet.load_state_dict(base_state)


RESNET_NAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def ldm_key(key: str, config) -> str:
    """The original-SD (ldm openaimodel.UNetModel) name of a diffusers UNet key, written for this test only."""
    per = config.layers_per_block + 1
    p = key.split(".")
    if p[0] == "time_embedding":
        return f"time_embed.{ {'linear_1': 0, 'linear_2': 2}[p[1]] }.{p[2]}"
    if p[0] in ("conv_in", "conv_norm_out", "conv_out"):
        return {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}[p[0]] + f".{p[1]}"
    if p[0] == "mid_block":
        index, local, is_resnet = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[f"{p[1]}.{p[2]}"], p[3:], \
            p[1] == "resnets"
        prefix = f"middle_block.{index}"
    else:
        i, kind, down = int(p[1]), p[2], p[0] == "down_blocks"
        attention = "CrossAttn" in (config.down_block_types if down else config.up_block_types)[i]
        if kind == "downsamplers":
            return f"input_blocks.{per * (i + 1)}.0.op.{p[-1]}"
        if kind == "upsamplers":
            return f"output_blocks.{per * i + per - 1}.{2 if attention else 1}.conv.{p[-1]}"
        local, is_resnet = p[4:], kind == "resnets"
        index = per * i + int(p[3]) + (1 if down else 0)
        prefix = f"{'input' if down else 'output'}_blocks.{index}.{0 if is_resnet else 1}"
    if is_resnet:
        local = [RESNET_NAMES[local[0]], *local[1:]]
    return f"{prefix}.{'.'.join(local)}"


def test_esd_weights_in_diffusers_names_load_before_generation(esd_pipe, base_state, tmp_path):
    weights = esd_state(base_state)
    torch.save(weights, tmp_path / "esd-unet.pt")
    options = {"kind": "esd", "weights": str(tmp_path / "esd-unet.pt")}
    try:
        assert method(options).prepare_pipeline(esd_pipe) is esd_pipe
        loaded = esd_pipe.unet.state_dict()
        assert all(torch.equal(loaded[key], weights[key]) for key in weights)
        identity = method(options).generation_options("tiny")["model_identity"]
        assert identity == f"tiny+esd:{esd.weights_digest(tmp_path / 'esd-unet.pt')[:16]}"
    finally:
        restore(esd_pipe, base_state)


def test_esd_safetensors_lightning_and_ldm_names_are_read(esd_pipe, base_state, tmp_path):
    from safetensors.torch import save_file

    weights = esd_state(base_state, seed=2)
    save_file(weights, tmp_path / "esd.safetensors")
    ldm = {"model.diffusion_model." + ldm_key(key, esd_pipe.unet.config): value for key, value in weights.items()}
    torch.save({"state_dict": ldm, "global_step": 1000}, tmp_path / "esd-ldm.ckpt")
    bare = {ldm_key(key, esd_pipe.unet.config): value for key, value in weights.items()}
    torch.save(bare, tmp_path / "esd-bare.pt")
    try:
        for name in ("esd.safetensors", "esd-ldm.ckpt", "esd-bare.pt"):
            restore(esd_pipe, base_state)
            esd.load_esd_weights(esd_pipe.unet, {"weights": str(tmp_path / name)})
            loaded = esd_pipe.unet.state_dict()
            assert all(torch.equal(loaded[key], weights[key]) for key in weights), name
        assert esd.key_format(ldm) == esd.key_format(bare) == "ldm" and esd.key_format(weights) == "diffusers"
    finally:
        restore(esd_pipe, base_state)


def test_esd_file_that_does_not_fit_is_refused_with_names(esd_pipe, base_state, tmp_path):
    weights = esd_state(base_state)
    del weights["conv_in.weight"]
    weights["mid_block.extra.weight"] = torch.zeros(3)
    weights["conv_out.weight"] = torch.zeros(4, 32, 1, 1)
    torch.save(weights, tmp_path / "other.pt")
    with pytest.raises(CheckpointMismatchError) as refusal:
        method({"kind": "esd", "weights": str(tmp_path / "other.pt")}).prepare_pipeline(esd_pipe)
    message = str(refusal.value)
    assert "1 missing keys (e.g. conv_in.weight)" in message
    assert "1 unexpected keys (e.g. mid_block.extra.weight)" in message
    assert "conv_out.weight: file (4, 32, 1, 1) vs model (4, 32, 3, 3)" in message
    assert "diffusers key names" in message and "model.diffusion_model." in message
    # Refused before loading anything: the UNet still holds the base weights.
    assert all(torch.equal(value, base_state[key]) for key, value in esd_pipe.unet.state_dict().items())

    # Another architecture (here: a UNet with other widths) fails the same way, without touching the model.
    wide = {key: torch.zeros(2, *value.shape[1:]) if value.ndim else value for key, value in base_state.items()}
    torch.save(wide, tmp_path / "wide.pt")
    with pytest.raises(CheckpointMismatchError, match=r"\d+ shape mismatches"):
        esd.load_esd_weights(esd_pipe.unet, {"weights": str(tmp_path / "wide.pt")})

    # A subset is refused unless method.partial says it is meant (keys left out keep the base weights).
    subset = {key: value for key, value in esd_state(base_state).items() if "attn2" in key}
    torch.save(subset, tmp_path / "xattn.pt")
    with pytest.raises(CheckpointMismatchError, match="method.partial=true"):
        esd.load_esd_weights(esd_pipe.unet, {"weights": str(tmp_path / "xattn.pt")})
    try:
        esd.load_esd_weights(esd_pipe.unet, {"weights": str(tmp_path / "xattn.pt"), "partial": True})
        loaded = esd_pipe.unet.state_dict()
        assert torch.equal(loaded["conv_in.weight"], base_state["conv_in.weight"])
        assert all(torch.equal(loaded[key], subset[key]) for key in subset)
    finally:
        restore(esd_pipe, base_state)


class _Pickled:
    """Any object that only full unpickling could rebuild."""


def test_esd_unreadable_or_missing_files_are_refused(esd_pipe, tmp_path):
    torch.save({"unet": _Pickled()}, tmp_path / "object.pt")
    with pytest.raises(CheckpointMismatchError, match="weights_only=True"):
        esd.load_esd_weights(esd_pipe.unet, {"weights": str(tmp_path / "object.pt")})
    torch.save({"step": 3}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointMismatchError, match="hold no tensors"):
        esd.load_esd_weights(esd_pipe.unet, {"weights": str(tmp_path / "empty.pt")})
    with pytest.raises(MissingAssetError, match="method.weights=<path"):
        method({"kind": "esd", "weights": None}).check_assets()
    with pytest.raises(MissingAssetError, match="does not exist"):
        method({"kind": "esd", "weights": str(tmp_path / "nowhere.pt")}).check_assets()
    with pytest.raises(ConfigError, match="suffix"):
        method({"kind": "esd", "weights": str(tmp_path / "weights.npz")}).validate("sd")
    method({"kind": "sld"}).check_assets()  # other methods need no files


# --- SDisc ------------------------------------------------------------------------------------------------------

SDISC = SDiscSettings(kind="fairness", images_per_concept=2, iterations=3, batch_size=2, lr=0.1, steps=2,
                      image_batch_size=2, init="zeros", log_every=1)
GENDER = [ConceptSpec("man", "a person", target_prompt="a man"), ConceptSpec("woman", "a person", target_prompt="a woman")]


def test_sdisc_learns_vectors_from_cached_base_model_images(tiny_pipe, tmp_path, monkeypatch):
    tset = train_sdisc(tiny_pipe, GENDER, SDISC, tmp_path, base_model="tiny", h_shape=H_SHAPE)
    assert tset.concepts == ["man", "woman"] and tset.metadata["base_model"] == "tiny"
    for concept in ("man", "woman"):
        vector = tset.modules[concept]["ram"]
        assert vector.config.parametrization == "vector" and tuple(vector.delta.shape) == (1, 64, 1, 1)
        assert vector.delta.abs().sum() > 0, "the vector moved away from its zero start"
        store = tmp_path / IMAGES_DIR / concept
        manifest = pd.read_parquet(store / "manifest.parquet")
        assert manifest["prompt"].tolist() == [f"a {concept}"] * 2 and set(manifest["status"]) == {"done"}
    losses = pd.read_csv(tmp_path / "sdisc" / "losses.csv")
    assert len(losses) == 6 and np.isfinite(losses["loss"]).all()
    assert tset.modules["man"]["ram"].delta.data_ptr() != tset.modules["woman"]["ram"].delta.data_ptr()

    # The stages can tell a finished set without a model; other settings are not finished.
    assert is_trained(tmp_path / "modules", sdisc_record(GENDER, SDISC, "tiny"))
    other_lr = SDiscSettings(**{**SDISC.__dict__, "lr": 0.5})
    assert not is_trained(tmp_path / "modules", sdisc_record(GENDER, other_lr, "tiny"))
    assert not is_trained(tmp_path / "modules", sdisc_record(GENDER[:1], SDISC, "tiny"))

    # A rerun reuses the saved set: no image is generated, nothing is trained.
    import respodiff.training.sdisc as sdisc_module

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished SDisc set must be reused")

    with monkeypatch.context() as patch:
        patch.setattr("respodiff.generation.generate", forbidden)
        patch.setattr(sdisc_module, "learn_vector", forbidden)
        again = train_sdisc(tiny_pipe, GENDER, SDISC, tmp_path, base_model="tiny", h_shape=H_SHAPE)
    assert torch.equal(again.modules["man"]["ram"].delta, tset.modules["man"]["ram"].delta)

    # Vectors lost, images kept: the images are reused as they are and training retraces the same vectors.
    images = sorted((tmp_path / IMAGES_DIR).rglob("*.png"))
    written = [path.stat().st_mtime_ns for path in images]
    shutil.rmtree(tmp_path / "modules")
    shutil.rmtree(tmp_path / "sdisc" / "concepts")
    rebuilt = train_sdisc(tiny_pipe, GENDER, SDISC, tmp_path, base_model="tiny", h_shape=H_SHAPE)
    assert [path.stat().st_mtime_ns for path in images] == written
    assert torch.equal(rebuilt.modules["woman"]["ram"].delta, tset.modules["woman"]["ram"].delta)

    # Other settings in the same folder are refused, not mixed.
    with pytest.raises(CheckpointMismatchError, match="other settings"):
        train_sdisc(tiny_pipe, GENDER, SDiscSettings(**{**SDISC.__dict__, "lr": 0.5}), tmp_path, "tiny", H_SHAPE)


def test_sdisc_vectors_generate_like_respodiff_modules(tiny_pipe, tmp_path):
    tset = train_sdisc(tiny_pipe, GENDER, SDISC, tmp_path, base_model="tiny", h_shape=H_SHAPE)
    for parts in tset.modules.values():
        parts["ram"].delta.data.fill_(3.0)  # large, so the edit shows in 3-step images
    base = render(tiny_pipe, tmp_path / "sd")
    manifest = build_manifest("t", TABLE, 2, ConceptPlan("fair", ["man", "woman"]), SAMPLER)
    edited = render(tiny_pipe, tmp_path / "edited", manifest, transformations=tset)
    assert all(np.abs(edited[key] - base[key]).max() > 8 for key in base)


def test_sdisc_safety_concepts_learn_from_negative_prompted_images(tiny_pipe, tmp_path):
    settings = SDiscSettings(**{**SDISC.__dict__, "kind": "safety", "iterations": 1})
    concepts = [ConceptSpec("violence", "a scene", negative_prompt="violence")]
    train_sdisc(tiny_pipe, concepts, settings, tmp_path, base_model="tiny", h_shape=H_SHAPE)
    manifest = pd.read_parquet(tmp_path / IMAGES_DIR / "violence" / "manifest.parquet")
    assert set(manifest["prompt"]) == {"a scene"} and set(manifest["negative_prompt"]) == {"violence"}


def test_sdisc_settings_are_checked():
    with pytest.raises(ConfigError, match="parametrization"):
        SDiscSettings(parametrization="linear")
    with pytest.raises(ConfigError, match="images_per_concept"):
        SDiscSettings(images_per_concept=0)
    with pytest.raises(ConfigError, match="lr"):
        SDiscSettings(lr=-1.0)


# --- negative prompt ----------------------------------------------------------------------------------------------


def test_fairness_negative_prompts_avoid_the_other_concepts():
    concepts = {"kind": "fairness", "items": {"white": {"target_prompt": "a white person"},
                                              "black": {"target_prompt": "a black person"},
                                              "asian": {"target_prompt": "an asian person"}}}
    manifest = build_manifest("w", TABLE, 6, ConceptPlan(), SAMPLER)
    negative = method({"kind": "negative_prompt"}, concepts)
    out = negative.adjust_manifest(manifest, "balanced")
    assert out["concept"].tolist()[:3] == ["white", "black", "asian"]
    assert out["negative_prompt"].tolist()[:3] == [
        "a black person, an asian person", "a white person, an asian person", "a white person, a black person"]
    assert out.groupby("prompt_id")["concept"].value_counts().eq(2).all()
    assert set(out["concept_weights"]) == {"{}"} and out["seed"].equals(manifest["seed"])
    uniform = negative.adjust_manifest(manifest, "uniform")
    assert uniform["concept"].tolist() == negative.adjust_manifest(manifest, "uniform")["concept"].tolist()
    # Safety concepts: every image avoids all unsafe concepts, labels and seeds unchanged; other kinds change nothing.
    safety = {"kind": "safety", "items": {"violence": {"negative_prompt": "violence"},
                                          "sexual": {"negative_prompt": "sexual"}}}
    avoided = method({"kind": "negative_prompt"}, safety).adjust_manifest(manifest, "balanced")
    assert set(avoided["negative_prompt"]) == {"violence, sexual"}
    assert avoided.drop(columns="negative_prompt").equals(manifest.drop(columns="negative_prompt"))
    assert method({"kind": "sld", "preset": "max"}, concepts).adjust_manifest(manifest, "balanced") is manifest
