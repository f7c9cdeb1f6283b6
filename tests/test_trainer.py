"""The training loop on the tiny model: learning, ablations, checkpoints, resume, bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from respodiff.errors import CheckpointMismatchError, ConfigError
from respodiff.hspace import HSpaceEditor
from respodiff.modules import HSpaceTransform, TransformationSet
from respodiff.objectives import encode_text, fairness_target, resp_loss, reverse_latents
from respodiff.training import ConceptSpec, TrainSettings, autocast_dtype, train_transformations

REPO = Path(__file__).resolve().parent.parent
H_SHAPE = (64, 8, 8)
WOMAN = ConceptSpec("woman", "a person", target_prompt="a woman", lr_ram=0.05, lr_sam=0.005)
MAN = ConceptSpec("man", "a person", target_prompt="a man", lr_ram=0.05, lr_sam=0.005)
VIOLENCE = ConceptSpec("violence", "a scene", negative_prompt="violence", lr_ram=0.05, lr_sam=0.005)
# Small and quick: k in 0..3 keeps the reverse process short; init_scale 1 gives RAM something to undo as well.
QUICK = TrainSettings(iterations=3, batch_size=2, max_step_index=3, init_scale=1.0, checkpoint_every=2, log_every=1)


class UNetCalls:
    """Counts UNet forward calls, to prove that some paths never reach the network."""

    def __init__(self, unet) -> None:
        self.count = 0
        self.handle = unet.register_forward_pre_hook(self._seen)

    def _seen(self, module, args) -> None:
        self.count += 1

    def __enter__(self) -> UNetCalls:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def train(pipe, out_dir, settings=QUICK, concepts=(WOMAN,), log=None) -> TransformationSet:
    return train_transformations(pipe, list(concepts), settings, out_dir, "tiny", H_SHAPE, log=log)


def state(modules: TransformationSet) -> dict[str, torch.Tensor]:
    return {
        f"{concept}/{part}/{key}": value
        for concept, parts in modules.modules.items()
        for part, module in parts.items()
        for key, value in module.state_dict().items()
    }


def assert_bit_identical(first: TransformationSet, second: TransformationSet) -> None:
    a, b = state(first), state(second)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def loss_rows(out_dir: Path) -> list[dict]:
    with open(out_dir / "losses.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------------------------
# Learning


@pytest.fixture(scope="module")
def trained(tiny_pipe, tmp_path_factory):
    """30 iterations of RAM + SAM for one concept, with every loss logged."""
    out_dir = tmp_path_factory.mktemp("train-30")
    logged: list[tuple[dict, int]] = []
    settings = replace(QUICK, iterations=30, checkpoint_every=10)
    started = time.perf_counter()
    result = train(tiny_pipe, out_dir, settings, log=lambda payload, step: logged.append((payload, step)))
    return dict(out_dir=out_dir, result=result, logged=logged, seconds=time.perf_counter() - started)


def test_training_reduces_the_responsibility_loss(trained):
    resp = np.array([payload["loss/resp"] for payload, _ in trained["logged"]])
    sem = np.array([payload["loss/sem"] for payload, _ in trained["logged"]])
    assert len(resp) == 30
    ratio = resp[-5:].mean() / resp[:5].mean()
    print(f"L_resp first-5 mean {resp[:5].mean():.5f}, last-5 mean {resp[-5:].mean():.5f}, ratio {ratio:.3f}, "
          f"{trained['seconds']:.1f}s")  # fmt: skip
    assert ratio < 0.8
    # SAM keeps the full transformation near the neutral prediction: L_sem stays finite and small.
    print(f"L_sem max {sem.max():.5f}, L_resp max {resp.max():.5f}")
    assert np.isfinite(sem).all() and sem.max() < 0.5 * resp.max()


def test_trained_ram_beats_its_initial_state_on_held_out_latents(tiny_pipe, trained):
    ram = trained["result"].modules["woman"]["ram"]
    initial = HSpaceTransform.from_config(ram.config)  # same seed: the exact starting point
    assert not torch.equal(initial.delta, ram.delta)
    editor = HSpaceEditor(tiny_pipe.unet)
    scheduler = DDIMScheduler.from_config(tiny_pipe.scheduler.config)
    scheduler.set_timesteps(50)
    uncond, neutral, target = (encode_text(tiny_pipe, p, (32, 32)) for p in (None, "a person", "a woman"))
    generator = torch.Generator().manual_seed(12345)
    noise, steps = torch.randn(8, 4, 16, 16, generator=generator), torch.tensor([0, 1, 2, 3] * 2)
    z = reverse_latents(tiny_pipe, scheduler, editor, [ram], noise, steps, uncond, neutral, 3.0)
    t = scheduler.timesteps[steps]
    goal = fairness_target(tiny_pipe, z, t, uncond, target).resp
    with torch.no_grad():
        before = resp_loss(tiny_pipe, editor, initial, z, t, neutral, goal).item()
        after = resp_loss(tiny_pipe, editor, ram, z, t, neutral, goal).item()
    print(f"held-out L_resp: initial RAM {before:.5f}, trained RAM {after:.5f}")
    assert after < 0.8 * before


def test_outputs_on_disk(trained):
    out_dir, result = trained["out_dir"], trained["result"]
    loaded = TransformationSet.load(out_dir / "modules", expected_h_shape=H_SHAPE, expected_base_model="tiny")
    assert_bit_identical(loaded, result)
    metadata = loaded.metadata
    assert metadata["prompts"]["woman"] == {"neutral": "a person", "target": "a woman", "negative": None}
    assert metadata["lambda_sem"] == 0.5 and metadata["iterations"] == 30
    assert metadata["learning_rates"]["woman"] == {"ram": 0.05, "sam": 0.005}
    assert metadata["parametrization"] == "constant" and metadata["settings"]["timestep"] == "reference"
    assert "git_hash" in metadata and metadata["concepts"] == {"woman": ["ram", "sam"]}

    rows = loss_rows(out_dir)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 31))
    assert {r["concept"] for r in rows} == {"woman"}
    first_payload, first_step = trained["logged"][0]
    assert first_step == 1 and first_payload["concept"] == "woman"
    assert float(rows[0]["loss_resp"]) == first_payload["loss/resp"]

    checkpoint = torch.load(out_dir / "checkpoints" / "woman" / "state.pt", weights_only=True)
    assert checkpoint["iteration"] == 30
    assert torch.equal(checkpoint["modules"]["ram"]["delta"], result.modules["woman"]["ram"].delta)
    assert sorted(p.name for p in (out_dir / "checkpoints" / "woman").iterdir()) == ["state.pt", "state.pt.sha256.json"]


def test_reloaded_modules_generate_bit_identical_images(tiny_pipe, trained):
    loaded = TransformationSet.load(trained["out_dir"] / "modules", expected_h_shape=H_SHAPE)
    editor = HSpaceEditor(tiny_pipe.unet)

    def generate(transformation=None):
        options = dict(num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
        if transformation is None:
            return tiny_pipe("a person", **options).images
        with editor.editing([transformation], cfg_half=True):
            return tiny_pipe("a person", **options).images

    try:
        original = generate(trained["result"].transformation("woman"))
        again = generate(loaded.transformation("woman"))
        plain = generate()
    finally:
        editor.remove()
    assert np.array_equal(original, again)
    assert not np.array_equal(original, plain)


# ---------------------------------------------------------------------------------------------------------------
# Ablations


@pytest.mark.parametrize(
    "changes, concept, parts",
    [
        (dict(parts="ram_only"), WOMAN, {"ram"}),
        (dict(lambda_sem=0.0), WOMAN, {"ram"}),
        (dict(parts="shared"), WOMAN, {"shared"}),
        (dict(parts="ram_only", parametrization="vector"), WOMAN, {"ram"}),  # CoDSMa
        (dict(parametrization="mlp", hidden_channels=8), WOMAN, {"ram", "sam"}),
        (dict(parametrization="conv"), WOMAN, {"ram", "sam"}),
        (dict(kind="safety", timestep="exact", reverse_parts="ram"), VIOLENCE, {"ram", "sam"}),
    ],
    ids=["ram_only", "lambda0", "shared", "codsma", "mlp", "conv", "safety"],
)
def test_ablations_train_and_save(tiny_pipe, tmp_path, changes, concept, parts):
    settings = replace(QUICK, iterations=2, batch_size=1, **changes)
    logged = []
    result = train(tiny_pipe, tmp_path, settings, concepts=(concept,), log=lambda p, s: logged.append(p))
    assert set(result.modules[concept.name]) == parts
    loaded = TransformationSet.load(tmp_path / "modules", expected_h_shape=H_SHAPE, expected_base_model="tiny")
    assert_bit_identical(loaded, result)
    for part, module in result.modules[concept.name].items():
        initial = HSpaceTransform.from_config(module.config)
        moved = any(not torch.equal(a, b) for a, b in zip(initial.parameters(), module.parameters()))
        assert moved, f"{part} did not change"
    assert all(("loss/sem" in p) == ("sam" in parts or "shared" in parts) for p in logged)


def test_training_runs_on_sdxl(tiny_sdxl_pipe, tmp_path):
    result = train(tiny_sdxl_pipe, tmp_path, replace(QUICK, iterations=2, batch_size=1))
    assert set(result.modules["woman"]) == {"ram", "sam"}
    assert TransformationSet.load(tmp_path / "modules", expected_h_shape=H_SHAPE).concepts == ["woman"]


def test_two_concepts_get_their_own_modules_and_monotone_log_steps(tiny_pipe, tmp_path):
    steps = []
    result = train(tiny_pipe, tmp_path, replace(QUICK, iterations=2), concepts=(WOMAN, MAN),
                   log=lambda p, s: steps.append((p["concept"], s)))  # fmt: skip
    assert result.concepts == ["woman", "man"]
    assert steps == [("woman", 1), ("woman", 2), ("man", 3), ("man", 4)]
    assert not torch.equal(result.modules["woman"]["ram"].delta, result.modules["man"]["ram"].delta)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and resume


def test_finished_run_is_skipped_on_rerun(tiny_pipe, trained):
    with UNetCalls(tiny_pipe.unet) as calls:
        again = train(tiny_pipe, trained["out_dir"], replace(QUICK, iterations=30, checkpoint_every=10))
    assert calls.count == 0
    assert_bit_identical(again, trained["result"])


def test_more_iterations_continue_from_the_checkpoint_bit_identically(tiny_pipe, tmp_path):
    straight = train(tiny_pipe, tmp_path / "straight", replace(QUICK, iterations=5))
    train(tiny_pipe, tmp_path / "staged", replace(QUICK, iterations=3))
    staged = train(tiny_pipe, tmp_path / "staged", replace(QUICK, iterations=5))
    assert_bit_identical(staged, straight)
    assert [int(r["iteration"]) for r in loss_rows(tmp_path / "staged")] == [1, 2, 3, 4, 5]


def test_checkpoint_from_other_settings_is_refused(tiny_pipe, tmp_path):
    train(tiny_pipe, tmp_path, QUICK)
    with pytest.raises(CheckpointMismatchError, match="other settings"):
        train(tiny_pipe, tmp_path, replace(QUICK, lambda_sem=1.0))
    with pytest.raises(CheckpointMismatchError, match="beyond"):
        train(tiny_pipe, tmp_path, replace(QUICK, iterations=2))


CHILD = """
import sys, time, torch
from respodiff.models import ModelSpec, load_pipeline
from respodiff.training import ConceptSpec, TrainSettings, train_transformations

cache_dir, out_dir, threads, settings_json = sys.argv[1:5]
torch.set_num_threads(int(threads))
pipe = load_pipeline(ModelSpec(name="tiny", source="tiny", id="tiny", arch="sd", resolution=32, cache_dir=cache_dir))
settings = TrainSettings(**__import__("json").loads(settings_json))
concept = ConceptSpec("woman", "a person", target_prompt="a woman", lr_ram=0.05, lr_sam=0.005)

def log(payload, step):
    if step > settings.checkpoint_every:  # the first checkpoint is on disk: wait here for SIGKILL
        time.sleep(600)

train_transformations(pipe, [concept], settings, out_dir, "tiny", (64, 8, 8), log=log)
"""


def test_run_killed_after_a_checkpoint_resumes_bit_identically(tiny_pipe, tiny_cache_dir, tmp_path):
    settings = replace(QUICK, iterations=7, checkpoint_every=3)
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    out_dir = tmp_path / "killed"
    checkpoint = out_dir / "checkpoints" / "woman" / "state.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    settings_json = json.dumps(settings.__dict__)
    child = subprocess.Popen(
        [sys.executable, str(script), str(tiny_cache_dir), str(out_dir), str(torch.get_num_threads()), settings_json],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not checkpoint.exists():
            if child.poll() is not None:
                pytest.fail(f"child exited early:\n{child.stdout.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint appeared within 180 s")
            time.sleep(0.1)
        # Give the child time to log iteration 4 (a csv row the resume must drop) before the kill.
        rows_deadline = time.monotonic() + 60
        while len(loss_rows(out_dir)) < 4 and time.monotonic() < rows_deadline:
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert torch.load(checkpoint, weights_only=True)["iteration"] == 3
    assert not (out_dir / "modules" / "metadata.json").exists()

    resumed = train(tiny_pipe, out_dir, settings)
    straight = train(tiny_pipe, tmp_path / "straight", settings)
    assert_bit_identical(resumed, straight)
    assert [int(r["iteration"]) for r in loss_rows(out_dir)] == list(range(1, 8))
    assert loss_rows(out_dir) == loss_rows(tmp_path / "straight")


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "changes",
    [
        dict(lambda_sem=-0.5),
        dict(lambda_sem=float("nan")),
        dict(parts="both"),
        dict(batch_size=0),
        dict(kind="style"),
        dict(timestep="midpoint"),
        dict(reverse_parts="sam"),
        dict(parametrization="quadratic"),
        dict(max_step_index=50),
        dict(precision="fp8"),
        dict(iterations=0),
    ],
)
def test_bad_settings_are_config_errors(changes):
    with pytest.raises(ConfigError):
        replace(QUICK, **changes)


@pytest.mark.parametrize(
    "concepts, changes",
    [
        ([ConceptSpec("woman", "a person")], {}),  # fairness without a target prompt
        ([ConceptSpec("violence", "a scene", target_prompt="a woman")], dict(kind="safety")),  # no negative prompt
        ([ConceptSpec("woman", "", target_prompt="a woman")], {}),
        ([WOMAN, WOMAN], {}),
        ([ConceptSpec("wo/man", "a person", target_prompt="a woman")], {}),
        ([replace(WOMAN, lr_ram=-1.0)], {}),
        ([], {}),
        ([WOMAN], dict(precision="fp16")),  # half precision on CPU
        ([replace(WOMAN, guidance_target=0.0)], {}),
    ],
)
def test_bad_input_fails_before_any_unet_call(tiny_pipe, tmp_path, concepts, changes):
    with UNetCalls(tiny_pipe.unet) as calls, pytest.raises(ConfigError):
        train(tiny_pipe, tmp_path, replace(QUICK, **changes), concepts=concepts)
    assert calls.count == 0
    assert not (tmp_path / "checkpoints").exists()


def test_settings_changed_after_construction_are_checked_again(tiny_pipe, tmp_path):
    settings = replace(QUICK)
    settings.lambda_sem = -1.0
    with UNetCalls(tiny_pipe.unet) as calls, pytest.raises(ConfigError, match="lambda"):
        train(tiny_pipe, tmp_path, settings)
    assert calls.count == 0


def test_precision_choice():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert autocast_dtype("auto", cpu, torch.float32) is None
    assert autocast_dtype("fp32", cuda, torch.float32) is None
    assert autocast_dtype("auto", cuda, torch.float16) == torch.float16  # follow fp16 weights
    assert autocast_dtype("bf16", cuda, torch.float32) == torch.bfloat16
    assert autocast_dtype("fp16", cuda, torch.float32) == torch.float16
    assert autocast_dtype("bf16", cpu, torch.float32) == torch.bfloat16  # CPUs with bf16 instructions
    with pytest.raises(ConfigError):
        autocast_dtype("fp16", cpu, torch.float32)


def test_target_guidance_defaults_follow_the_kind():
    assert TrainSettings().target_guidance == 4.0
    assert TrainSettings(kind="safety").target_guidance == 12.0
    assert TrainSettings(kind="safety", guidance_target=7.0).target_guidance == 7.0


def test_a_concepts_own_target_guidance_replaces_the_settings_one(tiny_pipe, tmp_path):
    one_step = replace(QUICK, iterations=1)
    own = train(tiny_pipe, tmp_path / "own", one_step, concepts=[replace(WOMAN, guidance_target=9.0)])
    shared = train(tiny_pipe, tmp_path / "shared", replace(one_step, guidance_target=9.0))
    default = train(tiny_pipe, tmp_path / "default", one_step)
    assert_bit_identical(own, shared)
    assert not torch.equal(state(own)["woman/ram/delta"], state(default)["woman/ram/delta"])


def test_lambda_mode_lr_moves_lambda_into_sams_learning_rate(tiny_pipe, tmp_path):
    two_steps = replace(QUICK, iterations=2)
    # At the reference lambda both modes train identically ...
    assert_bit_identical(
        train(tiny_pipe, tmp_path / "loss", replace(two_steps, lambda_sem=0.5)),
        train(tiny_pipe, tmp_path / "lr", replace(two_steps, lambda_sem=0.5, lambda_mode="lr")),
    )
    # ... elsewhere lr mode is loss mode with SAM's learning rate scaled by lambda / 0.5.
    assert_bit_identical(
        train(tiny_pipe, tmp_path / "lr1", replace(two_steps, lambda_sem=1.0, lambda_mode="lr")),
        train(tiny_pipe, tmp_path / "lr2x", replace(two_steps, lambda_sem=1.0), concepts=[replace(WOMAN, lr_sam=0.01)]),
    )


def test_h_shape_that_does_not_fit_the_unet_is_a_config_error(tiny_pipe, tmp_path):
    with pytest.raises(ConfigError, match="h_shape"):
        train_transformations(tiny_pipe, [WOMAN], QUICK, tmp_path, "tiny", (1280, 8, 8))
