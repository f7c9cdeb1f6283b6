"""Every baseline through the stages (`run_stages`, what run.py calls) on the tiny model with the tiny evaluators:
train (SDisc), generate and evaluate Winobias and I2P, and the results JSON the reproduction specs' rows look up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from respodiff.config import register_resolvers
from respodiff.reporting.selection import matches, split_results
from respodiff.reporting.specs import load_specs
from respodiff.reporting.store import load_results
from respodiff.stages import run_stages
from tests.conftest import tiny_spec
from tests.test_baselines import esd_state

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
    "model=tiny",
    "eval.benchmarks=[winobias,i2p]",
    "eval.sampler.steps=3",
    "eval.sampler.batch_size=4",
    "eval.bootstrap=20",
    "eval.winobias.images_per_concept=1",
    "+eval.winobias.professions=[Doctor,Nurse]",
    "+eval.winobias.templates=['Photo of {p}']",
    "eval.i2p.images_per_prompt=1",
    "train.iterations=2",
]
# (experiment, method, extra overrides): the experiment whose paper table has the method's row.
CASES = [
    ("gender_sd14", "none", []),
    ("safety_sd14", "negative_prompt", []),
    ("safety_sd14", "sld_medium", []),
    ("safety_sd14", "esd", ["method.weights={esd}"]),
    ("gender_sd14", "sdisc", ["method.images_per_concept=2", "method.batch_size=2"]),
]
# Spec rows each run must fill (file stem, row label).
ROWS = {
    "none": [("gender_sd14", "SD"), ("codsma_professions_sd14", "SD")],
    "negative_prompt": [("safety_sd14", "Negative prompt")],
    "sld_medium": [("safety_sd14", "SLD"), ("safety_i2p_categories_sd14", "SLD")],
    "esd": [("safety_sd14", "ESD"), ("safety_i2p_categories_sd14", "ESD")],
    "sdisc": [("gender_sd14", "SDisc")],
}


@pytest.fixture(scope="module")
def esd_file(tiny_cache_dir, tmp_path_factory):
    from respodiff.models import load_pipeline

    state = load_pipeline(tiny_spec(tiny_cache_dir)).unet.state_dict()
    path = tmp_path_factory.mktemp("esd") / "esd-unet.pt"
    torch.save(esd_state(state), path)
    return path


@pytest.mark.parametrize("experiment,method,extra", CASES, ids=[case[1] for case in CASES])
def test_baseline_runs_through_the_stages_and_fills_its_rows(experiment, method, extra, tiny_cache_dir, esd_file,
                                                             tmp_path):
    overrides = [f"experiment={experiment}", f"method={method}", *SMALL,
                 *(item.format(esd=esd_file) for item in extra), f"paths.cache_dir={tiny_cache_dir}"]
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    run_dir = tmp_path / "run"
    run_stages(cfg, run_dir, overrides=overrides)

    results = load_results([run_dir / "results"])
    assert set(results["benchmark"]) == {"winobias", "i2p"}
    assert set(results["method"]) == {method} and set(results["experiment"]) == {experiment}
    if method == "sdisc":
        assert (run_dir / "modules" / "metadata.json").is_file()
        assert len(list((run_dir / "sdisc" / "images").rglob("*.png"))) == 2 * len(cfg.concepts["items"])
    refs = split_results(results)
    specs = {spec.name: spec for spec in load_specs(ROOT / "reproductions")}
    for spec_name, label in ROWS[method]:
        row = next(r for r in specs[spec_name].rows if r.label == label)
        # Paper tables leave stand-in results out unless a clause names their model: name it, keep the row's keys.
        match = {**row.match, "model": "tiny"}
        benchmarks = {column.benchmark for column in specs[spec_name].columns} & {"winobias", "i2p"}
        assert benchmarks
        for benchmark in benchmarks:
            assert any(ref.benchmark == benchmark and matches(ref, match) for ref in refs), (spec_name, label)


def test_run_py_refuses_esd_without_weights_before_loading_anything(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RESPODIFF_OUTPUTS": str(tmp_path / "outputs"),
           "RESPODIFF_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "run.py", "model=tiny", "method=esd", "stage=generate"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "method=esd needs the published ESD UNet weights" in done.stderr
    assert not (tmp_path / "cache" / "tiny").exists(), "refused before the model was even built"
