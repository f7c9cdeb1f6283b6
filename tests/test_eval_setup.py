"""The eval config checked whole before any work: evaluator settings, benchmark blocks, the stand-in overlay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from respodiff.errors import ConfigError
from respodiff.evaluation.evaluator_settings import EvaluatorSettings, NudeNetSettings
from respodiff.evaluation.registry import get_benchmark
from respodiff.evaluation.setup import (
    EvalContext,
    benchmark_blocks,
    benchmark_settings,
    build_evaluators,
    validate_eval,
)
from respodiff.evaluation.stand_ins import stand_in_settings

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = EvalContext(seed=0, cache_dir="/tmp/respodiff-cache", concepts=["man", "woman"],
                      attribute_prompts=["a man", "a woman"])


def _eval(**blocks) -> dict:
    """A small eval config: winobias listed, every evaluator key at its default."""
    return {"benchmarks": ["winobias"], "bootstrap": 10, "sampler": {"steps": 2}, "force": False,
            "winobias": {"images_per_concept": 2}, **blocks}


@pytest.mark.parametrize("threshold", [-1, 1.5, 0.1, "high", True])
def test_nudenet_threshold_out_of_range_is_refused_naming_the_key(threshold):
    with pytest.raises(ConfigError, match=r"eval\.evaluators\.nudenet\.threshold must be in \[0\.2, 1\]"):
        validate_eval(_eval(evaluators={"nudenet": {"threshold": threshold}}), CONTEXT)


@pytest.mark.parametrize(("evaluators", "key"), [
    ({"nudenet": {"thresh": 0.5}}, "eval.evaluators.nudenet.thresh"),
    ({"batchsize": 8}, "eval.evaluators.batchsize"),
    ({"q16_model": "ViT-L-14"}, "eval.evaluators.q16_model"),  # the old alias is gone, not silently accepted
    ({"fid": {"mode": "legacy_tensorflow"}}, "eval.evaluators.fid.mode"),
    ({"fid": {"features": "vgg"}}, "eval.evaluators.fid.features"),
    ({"fid": {"num_workers": -1}}, "eval.evaluators.fid.num_workers"),
    ({"nudenet": {"classes": ["NOT_A_CLASS"]}}, "eval.evaluators.nudenet.classes"),
    ({"nudenet": {"classes": []}}, "eval.evaluators.nudenet.classes"),
    ({"q16": {"arch": "ViT-Q-99"}}, "eval.evaluators.q16.arch"),
    ({"q16": {"quick_gelu": "yes"}}, "eval.evaluators.q16.quick_gelu"),
    ({"clip": {"model": ""}}, "eval.evaluators.clip.model"),
    ({"clip": "openai/clip-vit-base-patch32"}, "eval.evaluators.clip"),
    ({"batch_size": 0}, "eval.evaluators.batch_size"),
    ({"device": "gpu"}, "eval.evaluators.device"),
    ({"scale": "huge"}, "eval.evaluators.scale"),
    ({"allow_download": "no"}, "eval.evaluators.allow_download"),
])
def test_every_evaluator_value_is_checked_with_its_full_key(evaluators, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_eval(_eval(evaluators=evaluators), CONTEXT)


@pytest.mark.parametrize(("blocks", "key"), [
    ({"winobias": {"images_per_concpet": 3}}, "eval.winobias.images_per_concpet"),
    ({"i2p": {"nudenet_threshold": 0.6}}, "eval.i2p.nudenet_threshold"),  # evaluator keys live under evaluators
    ({"coco30k": {"fid_mode": "clean"}}, "eval.coco30k.fid_mode"),
    ({"winobias": {"bootstrap": 5}}, "eval.winobias.bootstrap"),  # one name: n_bootstrap
    ({"winobias": {"images_per_concept": 0}}, "eval.winobias.images_per_concept"),
    ({"winobias": {"n_bootstrap": -1}}, "eval.winobias.n_bootstrap"),
    ({"i2p": {"images_per_prompt": 0}}, "eval.i2p.images_per_prompt"),  # checked though i2p is not listed
    ({"i2p_toy": {"images_per_prompt": 2.5}}, "eval.i2p_toy.images_per_prompt"),
    ({"coco_toy": {"size": 10}}, "eval.coco_toy.size"),
    ({"coco5k": {"dataset_size": 8, "size": 9}}, "eval.coco5k.size"),
    ({"i2p": {"verify_checksums": "yes"}}, "eval.i2p.verify_checksums"),
])
def test_benchmark_blocks_refuse_unknown_keys_and_bad_values_with_their_full_key(blocks, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_eval(_eval(**blocks), CONTEXT)


def test_unknown_benchmark_is_refused_and_other_eval_keys_are_left_to_the_run():
    with pytest.raises(ConfigError, match="eval.benchmarks names an unknown benchmark 'winobais'"):
        validate_eval(_eval(benchmarks=["winobais"]), CONTEXT)
    # sampler, force, compose, ... belong to the run: validate_eval neither reads nor refuses them
    validate_eval(_eval(compose=None, sampling="balanced", whatever={"x": 1}), CONTEXT)
    assert benchmark_blocks(_eval(i2p={}, whatever={})) == ["i2p", "winobias"]


def test_settings_reach_benchmarks_and_evaluators_without_loading_a_model():
    eval_cfg = _eval(evaluators={"nudenet": {"threshold": 0.6}, "device": None},
                     winobias={"images_per_concept": 2, "n_bootstrap": 7})
    validate_eval(eval_cfg, CONTEXT)
    settings = benchmark_settings(eval_cfg, "winobias", CONTEXT)
    assert settings["n_bootstrap"] == 7 and settings["bootstrap_seed"] == 0  # the block's count wins
    assert benchmark_settings(eval_cfg, "i2p", CONTEXT)["n_bootstrap"] == 10  # else eval.bootstrap
    assert settings["evaluators"]["nudenet"]["threshold"] == 0.6
    assert settings["evaluators"]["cache_dir"] == CONTEXT.cache_dir
    json.dumps(settings)  # plain data: recorded in every result's scored_with
    evaluators = build_evaluators(eval_cfg, CONTEXT, "cpu")
    assert evaluators.settings.nudenet == NudeNetSettings(threshold=0.6)
    assert evaluators.settings.device == "cpu"  # the run's device where the block says null
    assert evaluators.describe_config()["nudenet"]["threshold"] == 0.6
    assert build_evaluators(_eval(evaluators={"device": "cuda:1"}), CONTEXT, "cpu").settings.device == "cuda:1"


def test_checking_and_building_loads_no_evaluation_model():
    # In a fresh interpreter, so modules other tests imported do not hide an import made here.
    script = (
        "import sys\n"
        "from respodiff.evaluation.setup import EvalContext, build_evaluators, validate_eval\n"
        "context = EvalContext(seed=0, cache_dir='/tmp/x', concepts=['a', 'b'], attribute_prompts=[])\n"
        "eval_cfg = {'benchmarks': ['winobias', 'i2p', 'coco30k'], 'bootstrap': 10,\n"
        "            'evaluators': {'nudenet': {'threshold': 0.6}}, 'winobias': {'images_per_concept': 2}}\n"
        "validate_eval(eval_cfg, context)\n"
        "build_evaluators(eval_cfg, context, 'cpu')\n"
        "print(sorted(m for m in ('open_clip', 'nudenet', 'onnxruntime', 'transformers', 'cleanfid')\n"
        "             if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _compose(experiment: str):
    from respodiff.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=[f"experiment={experiment}"])


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_eval_config_validates(experiment):
    from omegaconf import OmegaConf

    cfg = _compose(experiment)
    context = EvalContext(seed=int(cfg.seed), cache_dir="/tmp/x", concepts=list(cfg.concepts["items"]),
                          attribute_prompts=list(cfg.concepts.get("attribute_prompts") or []))
    validate_eval(OmegaConf.to_container(cfg.eval, resolve=True), context)


def test_stand_in_overlay_has_the_nested_shape(tmp_path):
    overlay = stand_in_settings("tiny", tmp_path)
    settings = EvaluatorSettings.from_dict(overlay["evaluators"])
    assert settings.scale == "tiny" and settings.q16.random_weights and settings.q16.arch == "ViT-S-32"
    assert settings.fid.features == "quadrant-colours" and settings.clip.model.startswith(str(tmp_path))
    assert stand_in_settings("real", tmp_path) == {}
    validate_eval(_eval(**overlay), CONTEXT)


def test_toy_benchmarks_use_the_real_benchmarks_seams():
    winobias_toy, i2p_toy = type(get_benchmark("winobias_toy")), type(get_benchmark("i2p_toy"))
    assert "evaluate" not in vars(winobias_toy) and "score_images" in vars(winobias_toy)
    assert "evaluate" not in vars(i2p_toy) and i2p_toy.detectors == ("unsafe",)
