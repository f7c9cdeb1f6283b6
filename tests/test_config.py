"""Every config composes and validates; bad input fails fast, before any model is loaded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from respodiff.config import (
    apply_evaluator_scale,
    batch_invariant,
    register_resolvers,
    run_folder_name,
    validate,
)
from respodiff.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
# The evaluation scale follows the model's: stand-ins where the images cannot mean anything, else the real ones.
EVALUATOR_SCALES = {"tiny": "tiny", "tiny_sdxl": "tiny", "toy": "toy", "sd14": "real", "sd14_arch": "real",
                    "sdxl": "real"}


def compose_config(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_there_are_experiments_to_check():
    assert {"gender_sd14", "race_sd14", "safety_sd14", "gender_sdxl", "race_sdxl"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates_on_the_tiny_model(experiment):
    cfg = compose_config(f"experiment={experiment}", "model=tiny")
    validate(cfg)
    assert cfg.experiment_name, "every experiment names its run folder"
    assert cfg.model.source == "tiny"
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("method", METHODS)
def test_every_method_validates(method):
    validate(compose_config(f"method={method}"))


def test_experiment_files_say_how_to_run_them():
    for path in (CONF / "experiment").glob("*.yaml"):
        head = path.read_text().splitlines()[:3]
        assert head[0] == "# @package _global_", path.name
        assert any("python run.py" in line or "make " in line for line in head), f"{path.name}: say the command"


def test_negative_lambda_is_refused():
    with pytest.raises(ConfigError, match="lambda_sem"):
        validate(compose_config("method.lambda_sem=-1"))


def test_ram_only_with_nonzero_lambda_is_refused():
    with pytest.raises(ConfigError, match="ram_only"):
        validate(compose_config("method=ram_only", "method.lambda_sem=0.5"))


def test_a_concepts_own_target_guidance_must_be_positive():
    with pytest.raises(ConfigError, match="woman.*guidance_target"):
        validate(compose_config("+concepts.items.woman.guidance_target=0"))
    assert validate(compose_config("+concepts.items.woman.guidance_target=6")) is None


def test_unknown_lambda_mode_is_refused():
    with pytest.raises(ConfigError, match="lambda_mode"):
        validate(compose_config("method.lambda_mode=adam"))


def test_unknown_stage_and_sampling_are_refused():
    with pytest.raises(ConfigError, match="stage"):
        validate(compose_config("stage=deploy"))
    with pytest.raises(ConfigError, match="sampling"):
        validate(compose_config("eval.sampling=random"))


@pytest.mark.parametrize("model", MODELS)
def test_every_model_names_its_evaluation_scale(model):
    cfg = compose_config(f"model={model}")
    validate(cfg)
    assert cfg.model.evaluators == EVALUATOR_SCALES.get(model, cfg.model.evaluators)
    assert cfg.model.evaluators in ("tiny", "toy", "real")


def test_tiny_scale_points_evaluation_at_the_stand_ins_and_real_changes_nothing(tmp_path):
    cfg = apply_evaluator_scale(compose_config("experiment=safety_sd14", "model=tiny", f"paths.cache_dir={tmp_path}"))
    stand_ins = tmp_path / "eval-stand-ins-v1"
    assert cfg.eval.evaluators.scale == "tiny" and cfg.eval.evaluators.q16.pretrained == "random"
    assert cfg.eval.evaluators.clip.model == str(stand_ins / "clip")
    assert cfg.eval.i2p.data_dir == str(stand_ins / "data" / "i2p") and cfg.eval.i2p.dataset_size == 6
    assert not any(tmp_path.iterdir()), "composing builds nothing; the run builds the stand-ins on demand"
    real = compose_config("experiment=safety_sd14", "model=sd14")
    before = OmegaConf.to_container(real, resolve=True)
    assert OmegaConf.to_container(apply_evaluator_scale(real), resolve=True) == before
    # An explicit evaluator override beats the stand-ins' value.
    cfg = compose_config("model=tiny", "model.evaluators=toy", "eval.evaluators.nudenet.threshold=0.6")
    assert apply_evaluator_scale(cfg).eval.evaluators.nudenet.threshold == 0.6


def test_batch_invariant_reads_auto_true_false():
    assert batch_invariant(compose_config().eval) is None
    assert batch_invariant(compose_config("eval.sampler.batch_invariant=true").eval) is True
    assert batch_invariant(compose_config("eval.sampler.batch_invariant=false").eval) is False


def test_run_folder_names_are_stable_and_flat():
    assert run_folder_name("") == "default"
    assert run_folder_name("method=ram_only") == "method=ram_only"
    assert "/" not in run_folder_name("model.id=/some/folder")
    # A forced or added key ("++k=v", "+k=v") names the same run as "k=v".
    assert run_folder_name("++method.safety_concept=violence,method=sld_max") == "method.safety_concept=violence,method=sld_max"
    assert run_folder_name("+eval.x=1,method=none") == "eval.x=1,method=none"


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RESPODIFF_OUTPUTS": "/nonexistent-never-written"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["experiment=no_such_experiment"], "no_such_experiment"),
        (["concepts=no_such_concept"], "no_such_concept"),
        (["method.lambda_sem=-0.5"], "lambda_sem must be a finite number >= 0"),
        (["model=sd14", "model.source=local", "model.id=/no/such/folder"], "/no/such/folder"),
        (["model=sd14", "model.id=example-org/not-cached-model"], "not in the Hugging Face cache"),
        (["eval.benchmarks=[no_such_benchmark]"], "no_such_benchmark"),
        (["model.evaluators=huge"], "model.evaluators"),
        (["eval.sampler.batch_invariant=sometimes"], "batch_invariant"),
        (["eval.force=maybe"], "eval.force"),
    ],
)
def test_bad_input_fails_fast_with_a_clear_message(args, message, tmp_path):
    result = run_cli(*args, f"paths.output_dir={tmp_path}", env_extra={"HF_HOME": str(tmp_path / "hf")})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output
    assert "Traceback" not in output or "hydra" in output.lower()
    assert "Loading pipeline components" not in output, "the failure must come before any model loads"


def test_training_choices_are_checked_by_the_trainers_own_settings():
    with pytest.raises(ConfigError, match="parts"):
        validate(compose_config("method.parts=both"))
    with pytest.raises(ConfigError, match="reverse_parts"):
        validate(compose_config("method.reverse_parts=sam"))
    with pytest.raises(ConfigError, match="concepts.items.woman.lr_sam must be a number"):
        validate(compose_config("concepts.items.woman.lr_sam=fast"))
    with pytest.raises(ConfigError, match="woman.*lr_ram must be a positive number"):
        validate(compose_config("concepts.items.woman.lr_ram=0"))
    with pytest.raises(ConfigError, match="guidance_target must be a positive number"):
        validate(compose_config("concepts.guidance_target=0"))


def test_a_folder_models_identity_follows_its_weights(tmp_path):
    from respodiff.models import ModelSpec

    folder = tmp_path / "toy"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"a" * 3_000_000)
    spec = ModelSpec(name="toy", source="toy", id=str(folder))
    first = spec.identity
    assert first.startswith(f"{folder}#") and spec.identity == first  # stable
    # The price of reading 2 MiB per file: a change confined to the middle of a same-size file goes unnoticed.
    weights.write_bytes(b"a" * 1_500_000 + b"b" + b"a" * 1_499_999)
    assert spec.identity == first
    weights.write_bytes(b"a" * 2_999_999 + b"c")
    assert spec.identity != first
    assert ModelSpec(name="sd", source="hub", id="org/model", revision="abc").identity == "org/model@abc"
