"""How the speed benchmark measures: wall time, peak memory, counted FLOPs and the device's peak throughput."""

from __future__ import annotations

import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds `fn` takes, with queued GPU work drained on both sides so the time covers all of it."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs of every op `fn` dispatches (forward and backward), by torch's own counter; also the total per op."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


class PeakMemory:
    """Peak memory while the block runs.

    CUDA: torch.cuda.max_memory_allocated (tensors only, not the allocator's cache), reset on entry.
    CPU: the process's resident set size, sampled every `period` seconds by a thread (psutil), because
    getrusage's ru_maxrss is a high-water mark of the whole process that cannot be reset between measurements.
    """

    def __init__(self, device: torch.device, period: float = 0.01) -> None:
        self.device = device
        self.period = period
        self.peak = 0
        self.resident = 0  # what was already allocated on entry (weights of every loaded model)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def kind(self) -> str:
        return "cuda_max_memory_allocated" if self.device.type == "cuda" else "rss_sampled"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.resident = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.resident = self.peak = _rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.peak = max(self.peak, _rss())

    def _sample(self) -> None:
        while not self._stop.wait(self.period):
            self.peak = max(self.peak, _rss())


def _rss() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # no sampling without psutil: the process's high-water mark is the best left
        return max_rss()


def max_rss() -> int:
    """The process's peak resident set size so far, in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# ---------------------------------------------------------------------------------------------------------------
# The device's peak

# Dense (no sparsity) tensor-core peaks from NVIDIA's data sheets, TFLOP/s for bf16 and fp16 alike.
# Matched in order against torch.cuda.get_device_name(), so the more specific names come first.
GPU_DATASHEET_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM5 (e.g. "NVIDIA H100 80GB HBM3")
    ("H200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.0),
)


def datasheet_tflops(name: str) -> float | None:
    for key, tflops in GPU_DATASHEET_TFLOPS:
        if key.lower() in name.lower():
            return tflops
    return None


def gemm_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """Throughput of one large square matmul in `dtype`: what the BLAS reaches on this device, best of runs (the
    least disturbed one, on a machine shared with other work)."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    torch.mm(a, b)  # warm-up: library initialisation and kernel selection
    seconds = [timed(device, lambda: torch.mm(a, b))[0] for _ in range(repeats)]
    return 2 * size**3 / min(seconds) / 1e12


def device_peak(device: torch.device, dtype: torch.dtype, override: float | None) -> dict[str, Any]:
    """The peak the FLOP floor is computed against, with where it comes from.

    CPU: there is no reliable data sheet figure for a (shared, virtualised) CPU, so the peak is measured: a large
    fp32 GEMM on the threads the benchmark uses. The fraction of peak is then relative to what MKL/oneDNN reach on
    this machine, an upper bound that a real network's many small kernels cannot meet.
    GPU: the data sheet's dense bf16/fp16 tensor-core peak where the device is known; the measured GEMM is recorded
    beside it either way.
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        measured = gemm_tflops(device, dtype, 8192, repeats=20)
        sheet = datasheet_tflops(name)
        tflops, source = (sheet, f"data sheet: {name}, dense {dtype}") if sheet else (
            measured, f"measured: torch.mm 8192^3 in {dtype} on {name} (device not in the data-sheet table)"
        )
    else:
        name = "cpu"
        threads = torch.get_num_threads()
        measured = gemm_tflops(device, torch.float32, 2048)
        tflops, source = measured, f"measured: torch.mm 2048^3 in fp32 on {threads} thread(s), best of 5"
    if override is not None:
        tflops, source = override, "given on the command line (--peak-tflops)"
    return {"tflops": tflops, "source": source, "measured_gemm_tflops": measured, "dtype": str(dtype)}


def summarise(
    seconds: list[float], units: int, flops_per_run: int, peak_tflops: float, memory: dict[str, int]
) -> dict[str, Any]:
    """Rate, achieved throughput and the FLOP floor of one measured case, from its runs' wall times."""
    median = statistics.median(seconds)
    achieved = flops_per_run / median / 1e12
    return {
        "runs_s": [round(s, 4) for s in seconds],
        "median_s": median,
        "min_s": min(seconds),
        "units_per_run": units,
        "rate": units / median,
        "flop_per_unit": flops_per_run / units,
        "achieved_tflops": achieved,
        "fraction_of_peak": achieved / peak_tflops,
        "floor_s_per_unit": flops_per_run / units / (peak_tflops * 1e12),
        **memory,
    }
