"""Gender x race composition as the public script cycles it (docs/PUBLIC_SCRIPTS.md row 7): the concept set's
`compose_cycle` block reaches the generate stage, every Winobias prompt gets all 6 gender x race pairs at weights
0.6 / 0.4, 5 consecutive images each, and a benchmark whose per-prompt count would cut a round is refused at config
time, before training."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest
from omegaconf import OmegaConf

from respodiff.config import validate
from respodiff.errors import ConfigError
from respodiff.evaluation.registry import get_benchmark
from respodiff.evaluation.setup import EvalContext, benchmark_settings
from respodiff.generation import read_manifest
from respodiff.methods import build_method
from tests.test_config import compose_config
from tests.test_end_to_end import run_folder, run_py, succeeded

GENDERS, RACES = ("woman", "man"), ("black", "white", "asian")  # the script's itertools.product order
PAIRS = [{g: 0.6, r: 0.4} for g, r in itertools.product(GENDERS, RACES)]
TINY = ("experiment=compose_sd14_public", "model=tiny")


def plain_config(*overrides: str) -> dict:
    cfg = compose_config(*TINY, *overrides)
    validate(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def test_the_experiment_cycles_over_six_pairs_and_winobias_gives_whole_rounds():
    cfg = plain_config()
    method = build_method(cfg)
    plan = method.concept_plan(cfg["eval"]["sampling"], cfg["eval"]["compose"])
    assert plan.mode == "compose_cycle" and plan.cycle == PAIRS and plan.per_weights == 5
    assert plan.samples_per_round == 30
    context = EvalContext(seed=0, cache_dir="cache", concepts=method.concept_names,
                          attribute_prompts=cfg["concepts"]["attribute_prompts"])
    winobias = benchmark_settings(cfg["eval"], "winobias", context)
    assert get_benchmark("winobias").samples_per_prompt(winobias, len(method.concept_names)) == 30
    assert cfg["eval"]["image_format"] == "jpeg75" and cfg["train"]["precision"] == "fp32"
    # Trained like gender.yaml and race_sd14_public: the same prompts and learning rates per concept.
    gender, race = compose_config("experiment=gender_sd14"), compose_config("experiment=race_sd14_public")
    for name, item in cfg["concepts"]["items"].items():
        source = (gender if name in GENDERS else race).concepts["items"][name]
        assert (item["target_prompt"], item["lr_ram"], item["lr_sam"]) == (
            source.target_prompt, source.lr_ram, source.lr_sam)


@pytest.mark.parametrize("overrides, message", [
    (("eval.winobias.images_per_concept=5",), "winobias renders 25 images per prompt"),
    (("eval.benchmarks=[winobias,coco30k]",), "coco30k renders 1 images per prompt"),
    (("eval.compose={woman:0.6,black:0.4}",), "eval.compose and concepts.compose_cycle"),
    (("concepts.compose_cycle.groups=[[woman,man],[black,martian]]",), "concepts.compose_cycle.groups"),
    (("concepts.compose_cycle.weights=[0.6]",), "concepts.compose_cycle.weights"),
    (("concepts.compose_cycle.per_weights=0",), "concepts.compose_cycle.per_weights"),
    (("+concepts.compose_cycle.scales=[1]",), "concepts.compose_cycle.scales"),
])  # fmt: skip
def test_a_cycle_that_does_not_fit_is_refused_at_config_time(overrides, message):
    with pytest.raises(ConfigError, match=message):
        plain_config(*overrides)


@pytest.mark.parametrize("method", ["respodiff", "sdisc", "sdisc_public", "ram_only"])
def test_every_module_method_cycles_and_checks_the_rounds(method):
    """The cycle belongs to the concept set, so every method that applies modules follows it (SDisc too)."""
    plan = build_method(plain_config(f"method={method}")).concept_plan("balanced", None)
    assert plan.mode == "compose_cycle" and plan.cycle == PAIRS
    with pytest.raises(ConfigError, match="winobias renders 25 images per prompt"):
        plain_config(f"method={method}", "eval.winobias.images_per_concept=5")


def test_without_the_block_the_set_is_plain_fairness():
    cfg = plain_config("concepts.compose_cycle=null", "eval.winobias.images_per_concept=2")
    assert build_method(cfg).concept_plan("balanced", None).mode == "fair"


@pytest.mark.slow  # run.py on the tiny model: 5 concepts x 1 iteration, 150 images at 1 step (~30 s on 2 cores)
def test_a_tiny_composition_run_renders_every_pair_five_times_per_prompt(workspace):
    done = succeeded(run_py(workspace, *TINY, "train.iterations=1", "train.max_step_index=2", "eval.sampler.steps=1",
                            "eval.winobias.professions=[Doctor]", "threads=1"))
    manifest = read_manifest(run_folder(done) / "images" / "winobias")
    assert len(manifest) == 5 * 30 and set(manifest["status"]) == {"done"}
    assert all(path.endswith(".jpg") for path in manifest["path"])
    for _, images in manifest.groupby("prompt_id"):
        images = images.sort_values("sample_index")
        weights = [json.loads(w) for w in images["concept_weights"]]
        assert weights == [pair for pair in PAIRS for _ in range(5)]  # 5 consecutive images per pair, in order
    counts = pd.Series([tuple(sorted(json.loads(w).items())) for w in manifest["concept_weights"]]).value_counts()
    assert len(counts) == 6 and set(counts) == {25}  # 5 templates x 5 images of every pair
    assert manifest["concept"].iloc[0] == "woman+black"
