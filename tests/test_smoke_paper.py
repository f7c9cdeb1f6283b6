"""`make smoke-paper`'s SD v1.4 part: every stage at the real architecture (512 px, random weights, CPU), then the
real evaluator architectures at random weights. The SDXL part runs only in `make smoke-paper` (its 2.6B-parameter
UNet takes too long on a shared CPU for the test suite)."""

from __future__ import annotations

import json

import pytest

from benchmarks.smoke.__main__ import main


@pytest.mark.smoke
# SD v1.4's UNet at 64 x 64 latents, forward and backward: 10-20 minutes on 2 CPU cores, so make test-long and CI
# run it and make test does not.
@pytest.mark.timeout(2400)
def test_sd14_arch_runs_every_stage_and_records_time_and_memory(tmp_path):
    assert main(["--models", "sd14_arch", "--work", str(tmp_path / "work"), "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "sd14_arch.json").read_text())
    assert [stage["stage"] for stage in record["stages"]] == ["train", "generate", "evaluate", "report", "evaluators"]
    assert all(stage["returncode"] == 0 and stage["seconds"] > 0 and stage["peak_rss_mib"] > 0
               for stage in record["stages"])
    assert record["ok"] and record["command"] == "python -m benchmarks.smoke --models sd14_arch"
    assert len(list((tmp_path / "work" / "sd14_arch" / "images").rglob("*.png"))) == 2
