"""kill -9 at seeded points of train, generate and evaluate; the rerun finishes, and the final modules, images and
scores are byte-identical to an uninterrupted run's (tiny model, CPU).

Eleven starts of run.py (~2-4 minutes on an idle 2-core machine): marked `faults`, run by `make test-long` (and by
.ci/run), not by `make test`. One chain of restarts: each run is killed a seeded delay after it logs the stage its kill point aims at, the next
run resumes what the killed one left (checkpoints, images, results), and a last run completes.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.test_end_to_end import QUICK_WINOBIAS, ROOT, environment, run_folder, run_py, succeeded

ARGS = ("experiment=gender_sd14", "model=tiny", "eval.benchmarks=[winobias]", *QUICK_WINOBIAS,
        "train.iterations=6", "train.checkpoint_every=2", "eval.sampler.steps=2", "eval.sampler.batch_size=4",
        "eval.bootstrap=50")
# (stage, seconds after its first log line): 10 kill points over the three stages.
STAGES = ("train",) * 4 + ("generate",) * 4 + ("evaluate",) * 2
SEED = 20261201


def kill_points() -> list[tuple[str, float]]:
    rng = random.Random(SEED)
    return [(stage, rng.uniform(0.0, 2.5)) for stage in STAGES]


def run_until_killed(workspace: Path, run_dir: Path, stage: str, delay: float) -> bool:
    """Start the run, SIGKILL it `delay` s after it logs `stage <stage>`; False if it finished before that."""
    command = [sys.executable, "run.py", *ARGS, f"paths.output_dir={workspace / 'outputs'}",
               f"paths.cache_dir={workspace / 'cache'}", f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, cwd=ROOT, env=environment(workspace), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = None
    assert process.stdout is not None
    for line in process.stdout:
        if deadline is None and f"- stage {stage}" in line:
            deadline = time.monotonic() + delay
            break
    if deadline is not None:
        time.sleep(max(0.0, deadline - time.monotonic()))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
    process.wait(timeout=600)
    process.stdout.close()
    return process.returncode == -signal.SIGKILL


def outcome(run_dir: Path) -> dict[str, object]:
    """What must not depend on interruptions: module and image bytes, metrics and per-image scores."""
    files = {str(p.relative_to(run_dir)): p.read_bytes() for pattern in ("modules/**/*.safetensors", "images/**/*.png")
             for p in run_dir.glob(pattern)}
    result = json.loads((run_dir / "results" / "winobias.json").read_text())
    scores = pd.read_parquet(run_dir / "results" / "winobias.per_image.parquet")
    return {"files": files, "metrics": result["metrics"],
            "scores": scores.sort_values("image_id").reset_index(drop=True).to_json()}


@pytest.mark.faults
@pytest.mark.timeout(1800)
def test_kills_at_seeded_points_leave_a_rerun_identical_to_an_uninterrupted_run(workspace, tmp_path):
    reference = run_folder(succeeded(run_py(workspace, *ARGS, f"hydra.run.dir={tmp_path / 'reference'}")))
    interrupted = tmp_path / "interrupted"
    kills = sum(run_until_killed(workspace, interrupted, stage, delay) for stage, delay in kill_points())
    assert kills >= 6, f"only {kills} of 10 kill points hit a running process; the schedule needs retuning"
    succeeded(run_py(workspace, *ARGS, f"hydra.run.dir={interrupted}"))
    expected, found = outcome(reference), outcome(interrupted)
    assert found["files"].keys() == expected["files"].keys()
    assert [name for name in expected["files"] if found["files"][name] != expected["files"][name]] == []
    assert found["metrics"] == expected["metrics"] and found["scores"] == expected["scores"]
    assert not list(interrupted.rglob("*.tmp")), "temporary files of killed writes are swept"
