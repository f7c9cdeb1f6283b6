"""Generation across processes: two torchrun workers, and a run killed with SIGKILL then resumed.

Both compare with an uninterrupted single-process run of the same manifest (tests/scripts/generate_tiny.py).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from respodiff.generation import SamplerSettings, generate, read_manifest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "scripts" / "generate_tiny.py"
_spec = importlib.util.spec_from_file_location("generate_tiny", SCRIPT)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def environment() -> dict[str, str]:
    # The same thread count as this process, so CPU kernels partition work the same way here and there.
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}


def pixels(store: Path) -> dict[str, np.ndarray]:
    manifest = read_manifest(store)
    return {row.image_id: np.asarray(Image.open(store / row.path)) for row in manifest.itertuples()}


def assert_complete_and_equal(store: Path, reference: dict[str, np.ndarray]) -> None:
    manifest = read_manifest(store)
    assert (manifest["status"] == "done").all()
    on_disk = sorted(str(p.relative_to(store)) for p in (store / "images").rglob("*") if p.is_file())
    assert on_disk == sorted(manifest["path"])  # every image exactly once, no temporary leftovers
    assert not list(store.glob("manifest.shard-*")) and not list(store.glob(".*.tmp"))
    images = pixels(store)
    assert images.keys() == reference.keys()
    assert all(np.array_equal(images[key], reference[key]) for key in reference)


@pytest.fixture(scope="module")
def reference(tiny_pipe, tmp_path_factory):
    """The uninterrupted single-process run (batch 3; the workers use batch 2)."""
    manifest, modules = worker.tiny_job()
    store = tmp_path_factory.mktemp("reference")
    generate(tiny_pipe, manifest, store, modules, worker.SAMPLER, model_identity="tiny", progress=False)
    return pixels(store)


def test_two_torchrun_processes_match_one(reference, tiny_cache_dir, tmp_path):
    store = tmp_path / "store"
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(SCRIPT)]
    command += ["--cache-dir", str(tiny_cache_dir), "--store", str(store), "--batch-size", "2"]
    done = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    # 16 images in 8 batches of 2: each process renders 4 batches.
    assert "process 0 generated 8 images" in done.stderr and "process 1 generated 8 images" in done.stderr
    assert_complete_and_equal(store, reference)


def test_sigkill_mid_run_then_resume(reference, tiny_pipe, tiny_cache_dir, tmp_path):
    store = tmp_path / "store"
    command = [sys.executable, str(SCRIPT), "--cache-dir", str(tiny_cache_dir), "--store", str(store)]
    command += ["--batch-size", "2", "--sleep", "0.1", "--flush-every", "1"]
    slow = subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while len(list((store / "images").rglob("*.png"))) < 5:
            assert slow.poll() is None, slow.stderr.read().decode()[-4000:]
            assert time.monotonic() < deadline, "the worker wrote no images in time"
            time.sleep(0.05)
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait(timeout=60)
        slow.stderr.close()
    written = len(list((store / "images").rglob("*.png")))
    assert 5 <= written < 16, "the kill should land mid-run"
    recorded = read_manifest(
        store
    )  # flushed after every batch: some rows are recorded done, each with its file
    assert (recorded["status"] == "done").sum() >= 2
    assert all((store / p).is_file() for p in recorded.loc[recorded["status"] == "done", "path"])

    manifest, modules = worker.tiny_job()
    resumed = SamplerSettings(**{**worker.SAMPLER.__dict__, "batch_size": 4})
    generate(tiny_pipe, manifest, store, modules, resumed, model_identity="tiny", progress=False)
    assert_complete_and_equal(store, reference)
