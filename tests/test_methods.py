"""The Method interface: every conf/method YAML has a registered class; a method from outside the package (one
file + one YAML, tests/methods_plugin/) runs train/generate/evaluate on the tiny model; unknown keys anywhere in a
composed config are refused by their full name before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from respodiff.config import plain, validate
from respodiff.errors import ConfigError
from respodiff.methods import Method, available_methods, build_method, method_class
from tests.test_config import compose_config, run_cli
from tests.test_end_to_end import QUICK_WINOBIAS, run_folder, run_py, succeeded

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ("hydra.searchpath=[file://tests/methods_plugin/conf]", "method=mean_shift")
METHOD_FILES = sorted((ROOT / "conf" / "method").glob("*.yaml"))


@pytest.mark.parametrize("path", METHOD_FILES, ids=lambda path: path.stem)
def test_every_method_file_names_a_registered_kind(path):
    cfg = compose_config(f"method={path.stem}")
    assert cfg.method.kind in available_methods()
    assert isinstance(build_method(plain(cfg)), method_class(plain(cfg.method)))


def test_every_registered_kind_has_a_method_file():
    kinds = {compose_config(f"method={path.stem}").method.kind for path in METHOD_FILES}
    assert set(available_methods()) == kinds


def test_the_stages_never_branch_on_a_kind():
    source = (ROOT / "respodiff" / "stages.py").read_text()
    assert ".kind" not in source and "MODULE_KINDS" not in source


def test_an_unknown_kind_and_an_unimportable_module_are_refused():
    with pytest.raises(ConfigError, match="method.kind 'nope' is not one of"):
        method_class({"kind": "nope"})
    with pytest.raises(ConfigError, match="method.module 'no_such_package.m' cannot be imported"):
        method_class({"kind": "x", "module": "no_such_package.m"})


def test_a_method_key_its_kind_does_not_read_is_refused():
    with pytest.raises(ConfigError, match=r"method\.lamda_sem"):
        validate(compose_config("+method.lamda_sem=0.5"))
    # A key of another kind is just as unknown: SLD's preset means nothing to RespoDiff.
    with pytest.raises(ConfigError, match=r"method\.preset .*kind 'hspace'"):
        validate(compose_config("+method.preset=max"))


@pytest.mark.parametrize(
    "override, key",
    [
        ("+concepts.lambda_public=2", "concepts.lambda_public"),
        ("+concepts.items.woman.lr=0.1", "concepts.items.woman.lr"),
        ("+train.iteration=3", "train.iteration"),
        ("+eval.sampler.step=3", "eval.sampler.step"),
        ("+eval.benchmark=[winobias]", "eval.benchmark"),
        ("+paths.outputs=x", "paths.outputs"),
        ("+seeds=3", "seeds"),
    ],
)
def test_unknown_keys_anywhere_are_refused_by_full_name(override, key):
    with pytest.raises(ConfigError, match=rf"unknown config key\(s\) {key.replace('.', '[.]')}"):
        validate(compose_config(override))


def test_every_shipped_config_file_uses_known_keys_only():
    # compose_config(experiment=...) for every experiment runs validate in tests/test_config.py; here the concept
    # sets, which experiments do not all reach.
    for path in sorted((ROOT / "conf" / "concepts").glob("*.yaml")):
        # A composition cycle (gender_race: 6 pairs x 5 images) needs whole rounds per Winobias prompt.
        rounds = ["eval.winobias.images_per_concept=6"] if "compose_cycle" in path.read_text() else []
        validate(compose_config(f"concepts={path.stem}", *rounds))


@pytest.mark.parametrize(
    "args, key",
    [
        (["+method.lamda_sem=0.5"], "method.lamda_sem"),
        (["method.lamda_sem=0.5"], "method.lamda_sem"),  # Hydra's own struct check, also before any work
        (["+concepts.lambda_public=2"], "concepts.lambda_public"),
        (["eval.evaluators.nudenet.threshold=-1"], "eval.evaluators.nudenet.threshold"),
        (["eval.evaluators.nudenet.threshold=1.5"], "eval.evaluators.nudenet.threshold"),
    ],
)
def test_run_py_refuses_bad_keys_before_any_model_loads(args, key, tmp_path):
    result = run_cli("experiment=safety_sd14", "model=tiny", *args, f"paths.output_dir={tmp_path}",
                     env_extra={"HF_HOME": str(tmp_path / "hf")})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert key in output
    assert "Loading pipeline components" not in output
    written = {path.name for path in tmp_path.rglob("*")}
    assert not written & {"modules", "images", "results", "run.json"}, "no stage may start on a bad config"


@pytest.mark.slow
def test_a_method_from_a_test_file_trains_generates_and_evaluates(workspace):
    args = ("experiment=gender_sd14", "model=tiny", *PLUGIN, *QUICK_WINOBIAS, "eval.benchmarks=[winobias]",
            "eval.sampler.steps=2")
    output = succeeded(run_py(workspace, *args))
    run_dir = run_folder(output)
    metadata = json.loads((run_dir / "modules" / "metadata.json").read_text())
    assert metadata["mean_shift"]["prompts"] == {"man": ["a person", "a man"], "woman": ["a person", "a woman"]}
    manifest_weights = {json.dumps(json.loads(w)) for w in
                        __import__("pandas").read_parquet(run_dir / "images" / "winobias" / "manifest.parquet")
                        ["concept_weights"]}
    assert manifest_weights == {'{"man": 1.0}', '{"woman": 1.0}'}, "one concept per image, as for RespoDiff"
    winobias = json.loads((run_dir / "results" / "winobias.json").read_text())
    assert winobias["method"] == "mean_shift" and winobias["n_images"] == 20
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["method"]["module"] == "tests.methods_plugin.mean_shift"

    again = succeeded(run_py(workspace, *args))
    assert "nothing to train (model not loaded)" in again and "Loading pipeline components" not in again


def test_the_base_class_changes_nothing():
    cfg = plain(compose_config("method=none"))
    method = Method(cfg)
    assert method.generation_options("m") == {"model_identity": "m"}
    assert method.prepare_pipeline("pipe") == "pipe" and method.load_modules(Path("."), (1, 1, 1), "m", "cpu") is None
    assert method.concept_plan("balanced", None).mode == "none"
