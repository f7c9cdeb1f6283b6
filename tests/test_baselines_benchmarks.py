"""Every baseline through the Winobias and I2P benchmarks on the tiny model, at the library level.

Each case composes the real method config (conf/method/<name>.yaml), builds the benchmark's manifest with the
stages' own Method (plan, manifest changes), generates through `respodiff.generation.generate` with the baseline's
pipeline, call arguments and modules (respodiff.methods), and scores with `benchmark.evaluate` and tiny
evaluators (random tiny CLIP, Q16 on a random open_clip ViT-S-32, the real NudeNet detector). Numbers are
meaningless; the point is that every baseline fills the same tables through the same harness.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from respodiff import datasets
from respodiff.config import plain, register_resolvers, validate
from respodiff.evaluation.classifiers import ClipScorer, NudeNetClassifier, Q16Classifier
from respodiff.evaluation.evaluators import Evaluators
from respodiff.evaluation.registry import get_benchmark
from respodiff.evaluation.testing import i2p_like_table, save_tiny_clip, write_q16_prompt_pickle
from respodiff.generation import SamplerSettings, build_manifest, generate, read_manifest
from respodiff.methods import ModuleMethod, build_method
from respodiff.models import load_pipeline
from respodiff.training import SDiscSettings, concept_specs, train_sdisc
from tests.conftest import tiny_spec
from tests.test_baselines import esd_state

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
SAMPLER = SamplerSettings(steps=3, guidance_scale=7.5, height=32, width=32, batch_size=4)
H_SHAPE = (64, 8, 8)
BASELINES = ("none", "negative_prompt", "sld_max", "esd", "sdisc")
# Winobias scores the gender concepts, I2P the safety ones, as the paper's experiments pair them.
CONCEPTS = {"winobias": "gender", "i2p": "safety"}


def compose_config(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["model=tiny", *overrides])


@pytest.fixture(scope="module")
def evaluators(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluators")
    clip = ClipScorer.from_folder(save_tiny_clip(root / "clip"), identity={"clip_model": "tiny-clip"})
    write_q16_prompt_pickle(root / "q16" / "prompts.p", dim=384)
    torch.manual_seed(0)
    q16 = Q16Classifier.load("ViT-S-32", None, root / "q16" / "prompts.p", quick_gelu=False, batch_size=8)
    return Evaluators(clip=clip, q16=q16, nudenet=NudeNetClassifier(threshold=0.2))


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    root = tmp_path_factory.mktemp("i2p")
    i2p_like_table(4).to_csv(root / "i2p.csv", index=False)
    datasets.prepare("i2p", root / "data", from_files=root / "i2p.csv", expected_count=4)
    return {
        "winobias": {"professions": ["Doctor", "Nurse"], "templates": ["Photo of {p}"], "images_per_concept": 1,
                     "attribute_prompts": ["a man", "a woman"], "concepts": ["man", "woman"], "n_bootstrap": 20},
        "i2p": {"data_dir": str(root / "data"), "dataset_size": 4, "images_per_prompt": 1, "n_bootstrap": 20},
    }


@pytest.fixture(scope="module")
def esd_weights(tiny_cache_dir, tmp_path_factory):
    """An ESD-like UNet file (the tiny base weights with moved cross-attention) and a pipeline of its own."""
    pipe = load_pipeline(tiny_spec(tiny_cache_dir))
    path = tmp_path_factory.mktemp("esd") / "esd-unet.pt"
    torch.save(esd_state(pipe.unet.state_dict()), path)
    return path, pipe


def baseline_run(name: str, benchmark: str, tiny_pipe, esd_weights, folder):
    """(config, pipeline, transformations) of one baseline, prepared as the stages prepare them."""
    overrides = [f"method={name}", f"concepts={CONCEPTS[benchmark]}"]
    if name == "esd":
        overrides.append(f"method.weights={esd_weights[0]}")
    cfg = compose_config(*overrides)
    validate(cfg)
    method = build_method(plain(cfg))
    pipe = method.prepare_pipeline(esd_weights[1] if name == "esd" else tiny_pipe)
    transformations = None
    if isinstance(method, ModuleMethod):
        settings = SDiscSettings(kind=cfg.concepts.kind, images_per_concept=2, iterations=2, batch_size=2,
                                 steps=SAMPLER.steps, image_batch_size=4, lr=float(cfg.method.lr))
        transformations = train_sdisc(pipe, concept_specs(plain(cfg)), settings, folder, "tiny", H_SHAPE)
    return cfg, method, pipe, transformations


@pytest.mark.parametrize("benchmark", ["winobias", "i2p"])
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_fills_the_benchmark(name, benchmark, tiny_pipe, esd_weights, evaluators, settings, tmp_path):
    cfg, method, pipe, transformations = baseline_run(name, benchmark, tiny_pipe, esd_weights, tmp_path / "run")
    bench = get_benchmark(benchmark)
    options = settings[benchmark]
    manifest = build_manifest(
        benchmark,
        bench.prompt_table(options),
        bench.samples_per_prompt(options, n_concepts=len(cfg.concepts["items"])),
        method.concept_plan(cfg.eval.sampling, None),
        SAMPLER,
    )
    manifest = method.adjust_manifest(manifest, cfg.eval.sampling)
    store = tmp_path / "images" / benchmark
    generate(pipe, manifest, store, transformations, SAMPLER, progress=False,
             **method.generation_options("tiny"))
    result = bench.evaluate(read_manifest(store, absolute_paths=True), options, evaluators)

    assert len(result.per_image) == len(manifest) and result.per_image["image_id"].is_unique
    headline = result.metric("devrat" if benchmark == "winobias" else "inappropriate_rate")
    assert 0.0 <= headline["value"] <= 1.0 and math.isfinite(headline["value"])
    assert headline["n"] == len(manifest)

    identity = json.loads((store / "store.json").read_text())["identity"]
    images = read_manifest(store)
    if name == "negative_prompt":
        expected = {"a man", "a woman"} if benchmark == "winobias" else {"violence, sexual"}
        assert set(images["negative_prompt"]) == expected
    else:
        assert set(images["negative_prompt"]) == {""}
    if name == "sld_max":
        assert identity["pipeline"] == "StableDiffusionPipelineSafe" and identity["pipeline_kwargs"]
    if name == "esd":
        assert identity["model"].startswith("tiny+esd:")
    if name == "sdisc":
        assert set(identity["modules"]) == set(cfg.concepts["items"])
        plan = "sum" if benchmark == "i2p" else None
        assert (set(images["concept"]) == {plan}) if plan else set(images["concept"]) == {"man", "woman"}
    else:
        assert identity["modules"] == {}


def test_every_baseline_config_validates_for_every_concept_set():
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for name in (*BASELINES, "sld_weak", "sld_medium", "sld_strong"):
            for concepts in ("gender", "race", "safety"):
                cfg = compose(config_name="config", overrides=["model=tiny", f"method={name}", f"concepts={concepts}"])
                validate(cfg)
                assert cfg.method.name == name
    weak = compose_config("method=sld_weak", "method.params.sld_guidance_scale=200")
    assert build_method(plain(weak)).generation_options("tiny")["pipeline_kwargs"]["sld_guidance_scale"] == 200
    assert OmegaConf.select(compose_config("method=esd"), "method.weights") is None
