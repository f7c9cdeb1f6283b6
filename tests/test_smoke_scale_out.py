"""Scale out on an existing engine: a Hydra multirun through the submitit launcher (`hydra/launcher=submitit_local`,
the plugin family of `submitit_slurm`) runs two tiny jobs and both results are collected. The plugin,
hydra-submitit-launcher, is in the dev extra (pinned in constraints.txt), so `make test` always runs this."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # two tiny runs, each in its own submitit process: ~20 s on 2 free CPU cores
def test_submitit_local_multirun_runs_two_jobs_and_collects_both(tmp_path):
    # Not a skip: a missing plugin would hide exactly what this test is for.
    assert importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None, (
        "hydra-submitit-launcher is missing: pip install -c constraints.txt -e '.[dev]'"
    )
    outputs = tmp_path / "outputs"
    command = [
        sys.executable, "run.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
        "experiment=gender_sd14", "model=tiny", "method.lambda_sem=0,0.5", "train.iterations=2",
        "train.max_step_index=2", "threads=1",  # short and single-threaded: the jobs test the launcher
        "eval.sampler.steps=2", "eval.benchmarks=[winobias]", "eval.winobias.images_per_concept=1",
        "eval.winobias.professions=[Doctor]", f"paths.output_dir={outputs}", f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    results = sorted((outputs / "gender_sd14").glob("*/results/winobias.json"))
    assert len(results) == 2, sorted(p.name for p in (outputs / "gender_sd14").iterdir())
    assert all(json.loads(path.read_text())["metrics"] for path in results)
    collected = tmp_path / "runs"
    subprocess.run([sys.executable, "-m", "respodiff.reporting", "collect", str(outputs), "--dest", str(collected),
                    "--include-stand-ins"], cwd=ROOT, env=environment, check=True, capture_output=True)
    assert len(list(collected.rglob("*.json"))) >= 2
