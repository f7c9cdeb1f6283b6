"""The method works on the toy world: modules trained on the neutral prompt alone debias the kind prompts.

Runs `run.py` as a user does (experiment=gender_toy on the committed toy model, exact classifiers), with a short
training budget and the four most skewed kinds, for the base model and RespoDiff, then checks the measured DevRat
drop, that the kinds stay recognisable and that race, which the gender modules must not move, moves little
(leakage: TV of race between the paired runs, `respodiff.evaluation.compare`). ~2-3 minutes on one CPU core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Planted P(woman): doctor 0.10, nurse 0.95, pilot 0.05, guard 0.03 (planted DevRat 0.80-0.94).
KINDS = "[doctor,nurse,pilot,guard]"
# The experiment's own settings (the paper's target guidance 4, conf/concepts/toy_gender.yaml), a shorter budget.
QUICK = ("train.iterations=100", "eval.benchmarks=[winobias_toy]", f"+eval.winobias_toy.professions={KINDS}",
         "eval.winobias_toy.images_per_concept=2", "eval.bootstrap=0")

LEAKAGE_BOUND = 0.25


def run_toy(tmp_path: Path, method: str) -> tuple[Path, dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / f"run-{method}"  # named here: the override list would make too long a folder name
    command = [sys.executable, "run.py", "experiment=gender_toy", f"method={method}", *QUICK,
               f"hydra.run.dir={run_dir}", f"paths.cache_dir={tmp_path / 'cache'}"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = run_dir / "results" / "winobias_toy.json"
    return run_dir, {m["name"]: m["value"] for m in json.loads(result.read_text())["metrics"] if m["group"] is None}


@pytest.mark.slow
def test_modules_trained_on_neutral_prompt_debias_kind_prompts(tmp_path):
    if not (ROOT / "models" / "toy" / "model_index.json").is_file():
        pytest.skip("the toy model is not built (make toy-model)")
    from respodiff.evaluation.compare import compare_runs

    base_dir, base = run_toy(tmp_path, "none")
    method_dir, method = run_toy(tmp_path, "respodiff")
    assert base["devrat"] >= 0.7, base  # the planted bias is there to remove
    # 20 images per kind: a balanced generator scores ~0.18 by chance, so "debiased" means well below the base.
    assert method["devrat"] <= base["devrat"] - 0.4, (base, method)
    # Semantics: the prompted kind stays recognisable in at least 90% as many images as with the base model.
    assert method["kind_recognised"] >= 0.9 * base["kind_recognised"], (base, method)
    compare_runs(base_dir, method_dir, n_boot=50)
    paired = json.loads((method_dir / "results" / "winobias_toy_vs_base.json").read_text())["metrics"]
    leakage = {m["name"]: m["value"] for m in paired if m["group"] == {"attribute": "race"}}
    # 20 images per kind: two draws of the same model already differ by TV ~0.15 (the floor the comparison reports).
    assert leakage["leakage_tv"] <= max(LEAKAGE_BOUND, leakage["leakage_tv_floor"] + 0.1), leakage


def test_winobias_toy_scores_renders_exactly(tmp_path):
    """Fast: clean renders through the benchmark give the exact numbers (the classifiers are exact on renders)."""
    from PIL import Image

    from respodiff.evaluation.registry import get_benchmark
    from respodiff.generation import ConceptPlan, SamplerSettings, build_manifest
    from respodiff.toyworld import Scene
    from respodiff.toyworld.renderer import render

    bench = get_benchmark("winobias_toy")
    settings = {"attribute_prompts": ["a man", "a woman"], "concepts": ["man", "woman"], "images_per_concept": 1,
                "n_bootstrap": 0}
    plan = ConceptPlan(mode="fair", concepts=["man", "woman"])
    manifest = build_manifest("winobias_toy", bench.prompt_table(settings), 2, plan, SamplerSettings(height=32, width=32))
    paths = []
    for i, row in manifest.iterrows():
        # Every image shows its prompt's kind; doctors are all men (DevRat 1), every other kind is balanced (0).
        gender = "man" if row["profession"] == "doctor" else row["concept"]
        path = tmp_path / f"{i}.png"
        Image.fromarray(render(Scene(row["profession"], gender, "pale", False, i))).save(path)
        paths.append(str(path))
    manifest = manifest.assign(path=paths, status="done")
    result = bench.evaluate(manifest, settings, evaluators=None)
    assert result.metric("devrat", {"profession": "doctor"})["value"] == 1.0
    assert result.metric("devrat", {"profession": "nurse"})["value"] == 0.0
    assert result.metric("devrat")["value"] == 1.0 / 8
    assert result.metric("kind_recognised")["value"] == 1.0 and result.metric("agreement")["value"] == 100.0
