"""The speed benchmark's harness on the tiny model with minimal work: the results JSON is complete and the naive
loops compute what ours compute. No timing is asserted: times on a shared CPU say nothing in a test."""

from __future__ import annotations

import json

import pytest

from benchmarks.speed.__main__ import main

STATS = {
    "runs_s", "median_s", "min_s", "units_per_run", "rate", "flop_per_unit", "achieved_tflops", "fraction_of_peak",
    "floor_s_per_unit", "peak_memory_bytes", "peak_memory_gib", "resident_memory_bytes", "memory_kind", "flop_by_op",
}  # fmt: skip
TOP = {
    "schema", "model", "device", "date", "command", "provenance", "config", "threads", "peak", "unet", "training",
    "generation", "process_max_rss_bytes", "acceptance",
}  # fmt: skip
TRAINING = {
    "batch_size", "iterations_per_run", "settings", "step_indices", "mean_step_index", "ours", "naive", "speedup",
    "flop_ratio_naive_over_ours", "projected_minutes_5000", "max_abs_param_diff", "max_abs_param_update",
    "relative_param_diff",
}  # fmt: skip
ENGINE = STATS | {"batch_invariant", "speedup", "max_pixel_diff_vs_naive"}


@pytest.fixture(scope="module")
def results(tiny_cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    argv = [
        "--model", "tiny", "--device", "cpu", "--repeats", "1", "--train-batch-sizes", "1,2",
        "--train-iterations", "1,1", "--max-step-index", "2", "--images", "2", "--naive-images", "2",
        "--gen-batch-size", "2", "--gen-steps", "2", "--cache-dir", str(tiny_cache_dir), "--out-dir", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    files = list(out.glob("tiny-cpu-*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text())


def test_results_have_every_field(results):
    assert TOP <= results.keys()
    assert results["schema"] == "respodiff.speed/1" and results["model"] == "tiny" and results["device"] == "cpu"
    assert results["command"].endswith("--out-dir " + results["config"]["out_dir"])
    assert {"git_hash", "versions", "machine", "created"} <= results["provenance"].keys()
    assert {"torch", "diffusers"} <= results["provenance"]["versions"].keys()
    assert {"tflops", "source", "measured_gemm_tflops", "dtype"} <= results["peak"].keys()
    assert results["peak"]["tflops"] > 0
    assert results["unet"]["forward_gflop_batch1"] > 0 and results["unet"]["attention_processors"]
    assert set(results["training"]) == {"train_b1", "train_b2"}
    for group in results["training"].values():
        assert TRAINING <= group.keys()
        for role in ("ours", "naive"):
            assert STATS <= group[role].keys()
            assert group[role]["flop_per_unit"] > 0 and group[role]["peak_memory_bytes"] > 0
        assert {"at_measured_k", "at_expected_k"} <= group["projected_minutes_5000"].keys()
    generation = results["generation"]
    assert STATS <= generation["naive"].keys()
    for role in ("engine", "engine_batched"):
        assert ENGINE <= generation[role].keys()
    assert {"training", "generation", "training_speedup_required", "generation_speedup_required"} <= results[
        "acceptance"
    ].keys()


def test_naive_loops_compute_what_ours_compute(results):
    # Training: the same updates up to float rounding (the batched kernels round differently).
    for group in results["training"].values():
        assert group["relative_param_diff"] < 1e-2
    # The naive loop's extra work is the unconditional halves and the separate target calls.
    assert all(group["flop_ratio_naive_over_ours"] > 1 for group in results["training"].values())
    # Generation: the CPU engine renders one image per pipeline call, as the naive loop does: the same pixels.
    assert results["generation"]["engine"]["batch_invariant"] is True
    assert results["generation"]["engine"]["max_pixel_diff_vs_naive"] == 0


@pytest.mark.slow  # ~2-4 min on 2 CPU cores: building and copying SD v1.4's 1.1B random weights dominates
def test_bench_gpu_code_path_runs_on_cpu(tmp_path):
    """`make bench-gpu`'s model (sd14_arch, its preset) through every code path at 64 px and one step on the CPU,
    so the first GPU run cannot fail on a typo."""
    argv = [
        "--model", "sd14_arch", "--device", "cpu", "--resolution", "64", "--repeats", "1", "--train-batch-sizes",
        "1", "--train-iterations", "1", "--max-step-index", "1", "--images", "1", "--naive-images", "1",
        "--gen-batch-size", "1", "--gen-steps", "1", "--out-dir", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    (path,) = tmp_path.glob("sd14_arch-cpu-*.json")
    results = json.loads(path.read_text())
    assert results["model"] == "sd14_arch" and set(results["training"]) == {"train_b1"}
    assert TRAINING <= results["training"]["train_b1"].keys() and STATS <= results["generation"]["naive"].keys()
