"""Every stage end to end through `run.py` on the tiny model with the tiny evaluation scale (CPU, ~2-3 minutes).

Each command runs as a subprocess, as a user runs it, into one temporary outputs folder and one temporary cache
(tiny model, evaluator stand-ins and dataset fixtures are built there once, on demand). The Hub is offline and
HF_HOME points at an empty folder, so nothing here can reach the network or a real model by accident.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BUDGET = ("train.iterations=2", "eval.sampler.steps=2")
# Two professions instead of 36: 20 Winobias images per run instead of 360.
QUICK_WINOBIAS = ("eval.winobias.images_per_concept=1", "eval.winobias.professions=[Doctor,Nurse]")
WARNING = "tiny stand-ins: numbers are meaningless"


def environment(workspace: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "HF_HOME": str(workspace / "hf"),
            "PYTHONPATH": str(ROOT)}


def run_py(workspace: Path, *args: str, launcher: tuple[str, ...] = (sys.executable,)) -> subprocess.CompletedProcess:
    command = [*launcher, "run.py", *args, f"paths.output_dir={workspace / 'outputs'}",
               f"paths.cache_dir={workspace / 'cache'}"]
    return subprocess.run(command, cwd=ROOT, env=environment(workspace), capture_output=True, text=True, timeout=600)


def reporting(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "respodiff.reporting", *args]
    return subprocess.run(command, cwd=ROOT, env=environment(workspace), capture_output=True, text=True, timeout=300)


def succeeded(done: subprocess.CompletedProcess) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    return output


def run_folder(output: str) -> Path:
    return Path(re.findall(r"run folder: (.+)", output)[-1].strip())


def result(run_dir: Path, benchmark: str) -> dict:
    return json.loads((run_dir / "results" / f"{benchmark}.json").read_text())


def overall(res: dict, name: str) -> dict:
    return next(m for m in res["metrics"] if m["name"] == name and m["group"] is None)


# ---------------------------------------------------------------------------------------------------------------
# One run of every stage, then the same command again


@pytest.fixture(scope="module")
def gender_run(workspace):
    """The Winobias command of the task description: all 36 professions, one image per (template, concept)."""
    args = ("experiment=gender_sd14", "model=tiny", "eval.winobias.images_per_concept=1", *BUDGET,
            # Batched rendering: the key's non-default value, and ~1.5x faster than one call per image on CPU.
            "eval.sampler.batch_invariant=false", "eval.sampler.batch_size=40")
    output = succeeded(run_py(workspace, *args))
    return args, output, run_folder(output)


def test_every_stage_runs_and_results_carry_provenance(gender_run, workspace):
    _, output, run_dir = gender_run
    assert re.findall(r"- stage (\w+)$", output, re.MULTILINE) == ["train", "generate", "evaluate", "report"]
    assert (run_dir / "modules" / "metadata.json").is_file()
    manifest = pd.read_parquet(run_dir / "images" / "winobias" / "manifest.parquet")
    assert len(manifest) == 36 * 5 * 1 * 2 and (manifest["status"] == "done").all()

    winobias = result(run_dir, "winobias")
    assert winobias["schema"] == "respodiff.result/1"
    assert (winobias["experiment"], winobias["method"], winobias["model"], winobias["concepts"]) == (
        "gender_sd14", "respodiff", "tiny", "gender")
    assert "model=tiny" in winobias["overrides"] and winobias["run_name"] == run_dir.name
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", winobias["git_hash"])
    assert {"torch", "diffusers", "transformers", "python"} <= set(winobias["versions"])
    assert winobias["config"]["model"]["evaluators"] == "tiny"
    assert winobias["config"]["eval"]["sampler"]["batch_invariant"] is False
    assert winobias["n_images"] == 360
    evaluator = winobias["evaluator"]
    assert evaluator["scale"] == "tiny" and evaluator["warning"] == WARNING and evaluator["stand_ins"] == ["clip"]
    assert evaluator["clip_model"] == str(workspace / "cache" / "eval-stand-ins-v1" / "clip")
    assert 0 <= overall(winobias, "devrat")["value"] <= 1
    assert len([m for m in winobias["metrics"] if m["name"] == "devrat" and m["group"]]) == 36

    coco = result(run_dir, "coco30k")
    assert coco["n_images"] == 8, "the tiny COCO fixture has 8 captions, one image each"
    assert coco["evaluator"]["fid_features"] == "quadrant-colours-12" and coco["evaluator"]["scale"] == "tiny"
    assert overall(coco, "fid")["n"] == 8
    assert WARNING in (run_dir / "results" / "summary.md").read_text()
    assert json.loads((run_dir / "run.json").read_text())["git_hash"] == winobias["git_hash"]


def test_tiny_fixtures_go_through_the_prepare_command(gender_run, workspace):
    data = workspace / "cache" / "eval-stand-ins-v1" / "data"
    i2p = json.loads((data / "i2p" / "manifest.json").read_text())
    coco = json.loads((data / "coco30k" / "manifest.json").read_text())
    assert i2p["source"] == "files:i2p.csv" and i2p["counts"]["prompts"] == 6 and i2p["expected_count"] == 6
    assert coco["source"] == "files:coco" and coco["counts"] == {"captions": 8, "images": 8}
    assert sum(i2p["counts"]["categories"].values()) > 6, "multi-label prompts, as in I2P"


def test_rerunning_does_no_model_work_and_says_so(gender_run, workspace):
    args, _, run_dir = gender_run
    results = {p.name: p.stat().st_mtime_ns for p in (run_dir / "results").glob("*.json")}
    output = succeeded(run_py(workspace, *args))
    assert "nothing to train (model not loaded)" in output
    assert "winobias: all 360 images already generated" in output and "coco30k: all 8 images already generated" in output
    assert output.count("nothing to evaluate") == 2
    assert "Loading pipeline components" not in output and "images to generate" not in output
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "results").glob("*.json")} == results


# ---------------------------------------------------------------------------------------------------------------
# I2P, and the real scale's refusals


def test_safety_runs_on_the_tiny_i2p_fixture(workspace):
    output = succeeded(run_py(workspace, "experiment=safety_sd14", "model=tiny", "eval.i2p.images_per_prompt=1", *BUDGET))
    i2p = result(run_folder(output), "i2p")
    assert i2p["n_images"] == 6
    rate = overall(i2p, "inappropriate_rate")
    assert 0 <= rate["value"] <= 1 and rate["n"] == 6
    assert {m["group"]["category"] for m in i2p["metrics"] if m["group"] and "category" in m["group"]} >= {"sexual"}
    evaluator = i2p["evaluator"]
    assert evaluator["q16_model"] == "open_clip ViT-S-32" and evaluator["q16_checkpoint"].startswith("random")
    assert evaluator["nudenet_threshold"] == 0.2 and "nudenet_version" in evaluator
    assert evaluator["scale"] == "tiny" and evaluator["warning"] == WARNING


def test_real_scale_fails_before_any_work_when_evaluators_are_missing(workspace):
    done = run_py(workspace, "experiment=gender_sd14", "model=tiny", "model.evaluators=real", *BUDGET)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-4000:]
    assert "openai/clip-vit-base-patch32" in output and "not in the Hugging Face cache" in output
    assert "- stage " not in output and "Loading pipeline components" not in output


def test_coco30k_refuses_other_sizes_at_real_scale(workspace):
    done = run_py(workspace, "experiment=gender_sd14", "model=tiny", "model.evaluators=real",
                  "eval.benchmarks=[coco30k]", "eval.coco30k.size=5000")
    output = done.stdout + done.stderr
    assert done.returncode == 2 and "coco30k always uses 30000 captions" in output, output[-4000:]
    assert "- stage " not in output


# ---------------------------------------------------------------------------------------------------------------
# Multiruns and the reporting commands behind `make results` / `make paper-tables`


def test_lambda_multirun_fills_the_sweep_table_and_plot(workspace, tmp_path):
    output = succeeded(run_py(workspace, "-m", "experiment=gender_sd14", "model=tiny", "method.lambda_sem=0,0.5",
                              *QUICK_WINOBIAS, *BUDGET))
    sweep = workspace / "outputs" / "gender_sd14"
    folders = sorted(p.name for p in sweep.iterdir() if "method.lambda_sem=" in p.name)
    assert len(folders) == 2 and any("method.lambda_sem=0," in f for f in folders), output[-3000:]
    assert any("method.lambda_sem=0.5," in f for f in folders)

    runs = tmp_path / "runs"
    default = succeeded(reporting(workspace, "collect", str(workspace / "outputs"), "--dest", str(runs)))
    assert "collected 0 result file(s)" in default and "stand-in evaluators" in default
    succeeded(reporting(workspace, "collect", str(workspace / "outputs"), "--dest", str(runs), "--include-stand-ins"))

    # The paper's spec, pointed at the tiny runs: same columns and plots, only the match names model=tiny and the
    # budget overrides. The real spec itself must find nothing (tiny numbers never reach a paper table).
    spec = yaml.safe_load((ROOT / "reproductions" / "lambda_sweep_gender_sd14.yaml").read_text())
    budget_keys = [o.split("=")[0] for o in (*QUICK_WINOBIAS, *BUDGET)]
    spec["sweep"]["match"] = {**spec["sweep"]["match"], "model": "tiny",
                              "only_override_keys": ["method", "model", *budget_keys]}
    spec["sweep"]["values"] = {0: {}, 0.5: {}}
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "lambda_sweep_tiny.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    tables = succeeded(reporting(workspace, "tables", "--results", str(runs), "--specs", str(specs),
                                 "--out", str(tmp_path / "tables")))
    assert "lambda_sweep_tiny: 8 cell(s) with results, 0 warning(s)" in tables
    markdown = (tmp_path / "tables" / "lambda_sweep_tiny.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| λ = ")]
    assert [row.split("|")[1].strip() for row in rows] == ["λ = 0", "λ = 0.5"]
    assert all("–" not in row for row in rows), markdown
    plot = tmp_path / "plots" / "lambda_tradeoff_gender_sd14.png"
    assert plot.is_file() and plot.stat().st_size > 1000

    real = succeeded(reporting(workspace, "tables", "--results", str(runs), "--specs", str(ROOT / "reproductions"),
                               "--out", str(tmp_path / "real"), "--no-plots"))
    for name in ("lambda_sweep_gender_sd14", "gender_sd14", "ablation_gender_sd14"):
        assert f"{name}: 0 cell(s) with results" in real


def test_method_multirun(workspace):
    succeeded(run_py(workspace, "-m", "experiment=gender_sd14", "model=tiny", "method=respodiff,ram_only",
                     "eval.benchmarks=[winobias]", *QUICK_WINOBIAS, *BUDGET))
    sweep = workspace / "outputs" / "gender_sd14"
    for method, parts in (("respodiff", {"ram", "sam"}), ("ram_only", {"ram"})):
        (run_dir,) = [p for p in sweep.iterdir() if f"method={method}," in p.name]
        assert result(run_dir, "winobias")["method"] == method
        assert {p.name for p in (run_dir / "modules" / "man").iterdir()} == parts


# ---------------------------------------------------------------------------------------------------------------
# Several processes


def test_two_processes_split_generation_and_only_the_main_one_evaluates(workspace):
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    done = run_py(workspace, "experiment=gender_sd14", "model=tiny", "method=none", "eval.benchmarks=[winobias]",
                  *QUICK_WINOBIAS, *BUDGET, launcher=(torchrun, "--standalone", "--nproc_per_node", "2"))
    output = succeeded(done)
    assert "on 2 process(es)" in output
    assert "process 0 generated" in output and "process 1 generated" in output
    assert re.findall(r"- stage (\w+)$", output, re.MULTILINE).count("evaluate") == 1
    assert "stage evaluate runs on the main process only; process 1 of 2 is done" in output
    assert overall(result(run_folder(output), "winobias"), "devrat")["n"] == 20


def test_training_refuses_to_run_in_several_processes(tmp_path):
    from hydra import compose, initialize_config_dir

    from respodiff.config import model_spec, plain, register_resolvers
    from respodiff.errors import ConfigError
    from respodiff.methods import build_method
    from respodiff.stages import RunContext, stage_train

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=gender_sd14", "model=tiny"])
    context = RunContext(cfg, tmp_path, [], model_spec(cfg), build_method(plain(cfg)), "cpu", rank=0, world=2)
    with pytest.raises(ConfigError, match="training runs in one process"):
        stage_train(context)
