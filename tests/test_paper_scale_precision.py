"""`python -m benchmarks.speed.precision` (docs/PUBLIC_SCRIPTS.md row 2): the same iterations in fp32 and a faster
precision, compared module by module. Run here at the tiny scale with the variants a CPU has (bf16 autocast, fp16
weights), so the GPU command (`--model sd14_arch`: fp32 / bf16 / fp16 / fp16w) shares every code path but the
device's; fp16 autocast alone needs CUDA and is refused on a CPU by the trainer's own check."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.speed.precision import main
from respodiff.errors import ConfigError


def test_precision_check_compares_each_variant_with_fp32(tiny_cache_dir, tmp_path):
    argv = ["--iterations", "2", "--variants", "bf16,fp16w", "--device", "cpu", "--cache-dir", str(tiny_cache_dir),
            "--out-dir", str(tmp_path)]
    assert main(argv) == 0
    record = json.loads((tmp_path / "precision-tiny-cpu.json").read_text())
    assert list(record["variants"]) == ["fp32", "bf16", "fp16w"] and record["iterations"] == 2
    assert record["command"].startswith("python -m benchmarks.speed.precision --iterations 2")
    assert record["machine"]["cpus"] and record["created"] and record["versions"]["torch"]
    fp32 = record["variants"]["fp32"]
    assert fp32["ram_rel_diff"] == fp32["sam_rel_diff"] == 0.0
    for variant in ("bf16", "fp16w"):
        row = record["variants"][variant]
        for part in ("ram", "sam"):
            # Lower precision really ran (the modules differ) and still moved them the same way.
            assert 0 < row[f"{part}_rel_diff"] < 1 and math.isfinite(row[f"{part}_rel_diff"])
            assert row[f"{part}_update_cosine"] > 0.8


def test_fp16_autocast_is_refused_on_a_cpu(tiny_cache_dir, tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        main(["--iterations", "1", "--variants", "fp16", "--device", "cpu", "--cache-dir", str(tiny_cache_dir),
              "--out-dir", str(tmp_path)])
