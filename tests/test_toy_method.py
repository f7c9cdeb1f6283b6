"""The method works on the toy world: modules trained on the neutral prompt alone debias the kind prompts.

Runs `run.py` as a user does (experiment=gender_toy on the committed toy model, exact classifiers), with a short
training budget and the four most skewed kinds, for the base model and RespoDiff, then checks the measured DevRat
drop and that the kinds stay recognisable. ~2-3 minutes on one CPU core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Planted P(woman): doctor 0.10, nurse 0.95, pilot 0.05, guard 0.03; the base model exaggerates them (DevRat ~1).
KINDS = "[doctor,nurse,pilot,guard]"
QUICK = ("train.iterations=100", "eval.benchmarks=[winobias_toy]", f"eval.winobias_toy.professions={KINDS}",
         "eval.winobias_toy.images_per_concept=4", "eval.winobias_toy.templates=['photo of a {p}','portrait of a {p}']",
         "eval.bootstrap=0")

pytestmark = pytest.mark.slow


def run_toy(tmp_path: Path, method: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "run.py", "experiment=gender_toy", f"method={method}", *QUICK,
               f"paths.output_dir={tmp_path / 'outputs'}", f"paths.cache_dir={tmp_path / 'cache'}"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = next((tmp_path / "outputs" / "gender_toy").glob(f"*method={method}*/results/winobias_toy.json"))
    return {m["name"]: m["value"] for m in json.loads(result.read_text())["metrics"] if m["group"] is None}


def test_modules_trained_on_neutral_prompt_debias_kind_prompts(tmp_path):
    if not (ROOT / "models" / "toy" / "model_index.json").is_file():
        pytest.skip("the toy model is not built (make toy-model)")
    base = run_toy(tmp_path, "none")
    method = run_toy(tmp_path, "respodiff")
    assert base["devrat"] >= 0.7, base  # the planted bias is there to remove
    # 16 images per kind: a balanced generator scores ~0.2 by chance, so "debiased" means well below the base.
    assert method["devrat"] <= base["devrat"] - 0.4, (base, method)
    assert method["kind_recognised"] >= 0.9 * base["kind_recognised"], (base, method)
