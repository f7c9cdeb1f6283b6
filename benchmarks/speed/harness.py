"""One benchmark run: build the cases, count their FLOPs, time them interleaved, write one results JSON.

Order of work
1. Load ours and the naive fp32 copy from one folder (same weights).
2. Run every case once under torch's FlopCounterMode: the FLOPs of exactly the work that is timed (the runs are
   deterministic), and a warm-up (library initialisation, kernel selection) for the timed runs.
3. With --compile, compile our UNet now (after counting: compiled kernels bypass the counter) and warm it up.
4. `repeats` rounds; each round runs every case once, in listed order on even rounds and reversed on odd rounds,
   so ours and the naive loop share the machine's state (other users, clocks, caches) as evenly as possible.
   Medians over rounds are reported, every run's time beside them.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch

from respodiff.generation import SamplerSettings
from respodiff.provenance import provenance

from . import generation, training
from .measure import PeakMemory, count_flops, device_peak, max_rss, summarise, timed
from .pipelines import Models, compile_unet, load_models, model_spec

SCHEMA = "respodiff.speed/1"
GIB = 2**30
# The acceptance on CPU (tiny) and targets on one H100 (sd14_arch at 512 px).
CPU_TRAINING_SPEEDUP = 3.0
CPU_GENERATION_SPEEDUP = 2.0
GPU_IMAGES_PER_S = 5.0
GPU_MINUTES_5000 = 15.0
GPU_BATCH8_GIB = 20.0


@dataclass
class BenchConfig:
    model: str = "tiny"
    device: str | None = None  # default: cuda when available, else cpu
    repeats: int = 5
    train_batch_sizes: tuple[int, ...] = (1, 8)
    train_iterations: tuple[int, ...] = (8, 2)  # per batch size: the iterations of one timed run
    max_step_index: int = 48
    train_precision: str = "auto"  # our trainer's train.precision; the naive loop is fp32 by definition
    images: int = 8  # images of one timed engine run
    naive_images: int = 8  # images of one timed naive run (fewer where reloading the model is slow)
    gen_batch_size: int = 8
    gen_steps: int = 50
    guidance: float = 7.5
    resolution: int | None = None  # default: the model config's
    channels_last: bool = False
    compile: bool = False
    peak_tflops: float | None = None
    threads: int | None = None
    cache_dir: str | None = None
    out_dir: str = "results/speed"
    tag: str = ""


# Defaults per model; the command line overrides any of them. sd14_arch keeps one run of `make bench-gpu` to a
# few minutes of an H100 (most of it the naive loops).
PRESETS: dict[str, dict[str, Any]] = {
    # Batch 32: on CPU the trainer's gain is batching (the naive loop wastes only ~6% of the FLOPs), so it grows
    # with the batch; benchmarks/speed/README.md.
    "tiny": dict(train_batch_sizes=(1, 8, 32), train_iterations=(8, 2, 1)),
    "sd14_arch": dict(repeats=3, train_iterations=(10, 2), images=32, naive_images=4, gen_batch_size=16),
}


@dataclass
class Case:
    group: str
    role: str
    unit: str
    units: int
    execute: Callable[[Path], Any]
    visiting: Any = None  # a pipeline kept off the device except during this case (the naive fp32 copy)
    flops: int = 0
    flops_per_op: dict[str, int] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    residents: list[int] = field(default_factory=list)
    last: Any = None
    folder: Path | None = None

    def run(self, folder: Path) -> Any:
        self.last = self.execute(folder)
        return self.last


def run(config: BenchConfig, command: str) -> tuple[dict[str, Any], Path]:
    """Measure, write results JSON into config.out_dir, return (results, path)."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    spec = model_spec(config.model, config.resolution, config.cache_dir)
    models = load_models(spec, device, channels_last=config.channels_last)
    workdir = Path(tempfile.mkdtemp(prefix="respodiff-speed-"))
    try:
        peak = device_peak(device, models.dtype if device.type == "cuda" else torch.float32, config.peak_tflops)
        unet_info = _unet_info(models)
        cases, context = _cases(config, models)
        for case in cases:  # FLOPs of the timed work; doubles as the warm-up
            with _prepared(case, workdir, device) as folder:
                case.flops, case.flops_per_op = count_flops(partial(case.run, folder))
        if config.compile:
            compile_unet(models.ours.unet)
            for case in cases:
                if case.role != "naive":
                    with _prepared(case, workdir, device) as folder:
                        case.run(folder)
        for round_ in range(config.repeats):
            for case in cases if round_ % 2 == 0 else cases[::-1]:
                with _prepared(case, workdir, device) as folder, PeakMemory(device) as memory:
                    seconds, _ = timed(device, partial(case.run, folder))
                case.seconds.append(seconds)
                case.peaks.append(memory.peak)
                case.residents.append(memory.resident)
        results = _results(config, command, models, device, peak, unet_info, cases, context, PeakMemory(device).kind)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        models.close()
    path = Path(config.out_dir) / _file_name(config, device, results["date"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    return results, path


@contextmanager
def _prepared(case: Case, workdir: Path, device: torch.device) -> Iterator[Path]:
    """A fresh folder for one run, and the case's visiting pipeline on the device; neither is part of the timing.

    The previous run's folder goes; the last one stays for the checks that compare ours with the naive loop.
    """
    if case.folder is not None:
        shutil.rmtree(case.folder, ignore_errors=True)
    case.folder = Path(tempfile.mkdtemp(prefix=f"{case.group}-{case.role}-", dir=workdir))
    if case.visiting is not None:
        case.visiting.to(device)
    try:
        yield case.folder
    finally:
        if case.visiting is not None and device.type == "cuda":
            case.visiting.to("cpu")
            torch.cuda.empty_cache()


def _cases(config: BenchConfig, models: Models) -> tuple[list[Case], dict[str, Any]]:
    if len(config.train_iterations) != len(config.train_batch_sizes):
        raise SystemExit("--train-iterations needs one value per --train-batch-sizes value")
    cases: list[Case] = []
    context: dict[str, Any] = {"train_settings": {}}
    for batch_size, iterations in zip(config.train_batch_sizes, config.train_iterations):
        s = training.settings(batch_size, iterations, config.max_step_index, config.train_precision)
        group = f"train_b{batch_size}"
        context["train_settings"][group] = s
        cases.append(Case(group, "naive", "iteration", iterations, training.naive(models, s), models.naive))
        cases.append(Case(group, "ours", "iteration", iterations, training.ours(models, s)))
    sampler = SamplerSettings(
        steps=config.gen_steps, guidance_scale=config.guidance, height=models.spec.resolution,
        width=models.spec.resolution, batch_size=config.gen_batch_size,
    )  # fmt: skip
    rows = generation.manifest(max(config.images, config.naive_images), sampler)
    tset = generation.transformations(models)
    engine_rows, naive_rows = rows.iloc[: config.images], rows.iloc[: config.naive_images]
    context.update(sampler=sampler, naive_rows=naive_rows)
    cases.append(Case("generation", "naive", "image", config.naive_images, generation.naive(models, naive_rows, tset, sampler)))
    cases.append(Case("generation", "engine", "image", config.images, generation.engine(models, engine_rows, tset, sampler, None)))
    if models.device.type == "cpu":  # the engine's CPU default renders one image per call; batched is an option
        cases.append(
            Case("generation", "engine_batched", "image", config.images,
                 generation.engine(models, engine_rows, tset, sampler, False))
        )  # fmt: skip
    return cases, context


def _unet_info(models: Models) -> dict[str, Any]:
    """One UNet forward at batch 1 (FLOPs, the share of the encoder half) and which attention runs."""
    unet = models.ours.unet
    latents = torch.randn(1, *models.latent_shape, device=models.device, dtype=models.dtype)
    text = torch.zeros(1, models.ours.tokenizer.model_max_length, unet.config.cross_attention_dim,
                       device=models.device, dtype=models.dtype)  # fmt: skip
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unet(latents, torch.tensor([500], device=models.device), encoder_hidden_states=text)
    counts = counter.get_flop_counts()
    total = counter.get_total_flops()
    root = type(unet).__name__
    encoder = sum(
        sum(counts.get(f"{root}.{name}", {}).values())
        for name in ["conv_in", "time_embedding", "mid_block"] + [f"down_blocks.{i}" for i in range(len(unet.down_blocks))]
    )
    return {
        "forward_gflop_batch1": total / 1e9,
        "forward_gflop_by_op": {str(op): n / 1e9 for op, n in counts.get("Global", {}).items()},
        "encoder_flop_fraction": encoder / total,
        "parameters_millions": sum(p.numel() for p in unet.parameters()) / 1e6,
        "attention_processors": sorted({type(p).__name__ for p in unet.attn_processors.values()}),
        "latent_shape": list(models.latent_shape),
        "h_shape": list(models.h_shape),
        "dtype": str(models.dtype),
    }


def _results(config, command, models, device, peak, unet_info, cases, context, memory_kind) -> dict[str, Any]:
    tflops = peak["tflops"]
    stats = {}
    for case in cases:
        memory = {
            "peak_memory_bytes": max(case.peaks),
            "peak_memory_gib": max(case.peaks) / GIB,
            "resident_memory_bytes": min(case.residents),
            "memory_kind": memory_kind,
        }
        stats[(case.group, case.role)] = dict(summarise(case.seconds, case.units, case.flops, tflops, memory),
                                              flop_by_op=case.flops_per_op)  # fmt: skip
    by_key = {(case.group, case.role): case for case in cases}
    forward_flop = unet_info["forward_gflop_batch1"] * 1e9

    trainings = {}
    for group, s in context["train_settings"].items():
        ours, naive = stats[(group, "ours")], stats[(group, "naive")]
        ks = training.step_indices(s)
        trainings[group] = {
            "batch_size": s.batch_size,
            "iterations_per_run": s.iterations,
            "settings": asdict(s),
            "step_indices": ks,
            "mean_step_index": statistics.mean(ks),
            "ours": ours,
            "naive": naive,
            "speedup": ours["rate"] / naive["rate"],
            "flop_ratio_naive_over_ours": naive["flop_per_unit"] / ours["flop_per_unit"],
            "projected_minutes_5000": _projected_minutes(ours, s, ks, forward_flop),
            **training.agreement(by_key[(group, "ours")].last, by_key[(group, "naive")].last, s, models.h_shape),
        }
    naive_paths = list(context["naive_rows"]["path"])[: config.images]  # the images both loops render
    gen = {
        "sampler": asdict(context["sampler"]),
        "naive": stats[("generation", "naive")],
    }
    naive_folder = by_key[("generation", "naive")].last
    for role in ("engine", "engine_batched"):
        if ("generation", role) in stats:
            engine_stats = stats[("generation", role)]
            gen[role] = {
                **engine_stats,
                "batch_invariant": role == "engine" and device.type == "cpu",
                "speedup": engine_stats["rate"] / gen["naive"]["rate"],
                "max_pixel_diff_vs_naive": generation.max_pixel_diff(by_key[("generation", role)].last, naive_folder,
                                                                     naive_paths),  # fmt: skip
            }
    date = datetime.now(timezone.utc).date().isoformat()
    return {
        "schema": SCHEMA,
        "model": config.model,
        "device": device.type,
        "date": date,
        "command": command,
        "provenance": provenance(),
        "config": {**asdict(config), "train_batch_sizes": list(config.train_batch_sizes),
                   "train_iterations": list(config.train_iterations)},  # fmt: skip
        "threads": torch.get_num_threads(),
        "peak": peak,
        "unet": unet_info,
        "training": trainings,
        "generation": gen,
        "process_max_rss_bytes": max_rss(),
        "acceptance": _acceptance(device, trainings, gen),
    }


def _projected_minutes(ours: dict[str, Any], s, ks: list[int], forward_flop: float) -> dict[str, float]:
    """5000 iterations at the measured rate, and rescaled to the mean k of the protocol's uniform draw.

    A run's k are a small sample; the reverse process (2 UNet rows per sample and step) costs in proportion to
    sum(k). The rescaled figure assumes time proportional to FLOPs, with the reverse FLOPs taken from the counted
    batch-1 forward.
    """
    measured = 5000 * ours["median_s"] / s.iterations / 60
    per_iteration = ours["flop_per_unit"]
    reverse = 2 * forward_flop * sum(ks) / s.iterations
    expected = per_iteration - reverse + 2 * forward_flop * s.batch_size * s.max_step_index / 2
    return {"at_measured_k": measured, "at_expected_k": measured * expected / per_iteration}


def _acceptance(device: torch.device, trainings: dict[str, Any], gen: dict[str, Any]) -> dict[str, Any]:
    if device.type == "cpu":
        return {
            "training_speedup_required": CPU_TRAINING_SPEEDUP,
            "training": {g: {"speedup": t["speedup"], "met": t["speedup"] >= CPU_TRAINING_SPEEDUP}
                         for g, t in trainings.items()},  # fmt: skip
            "generation_speedup_required": CPU_GENERATION_SPEEDUP,
            "generation": {r: {"speedup": gen[r]["speedup"], "met": gen[r]["speedup"] >= CPU_GENERATION_SPEEDUP}
                           for r in ("engine", "engine_batched") if r in gen},  # fmt: skip
        }
    result: dict[str, Any] = {
        "generation_images_per_s_required": GPU_IMAGES_PER_S,
        "generation_images_per_s": gen["engine"]["rate"],
        "generation_met": gen["engine"]["rate"] >= GPU_IMAGES_PER_S,
    }
    if "train_b1" in trainings:
        minutes = trainings["train_b1"]["projected_minutes_5000"]["at_expected_k"]
        result.update(train_minutes_5000_required=GPU_MINUTES_5000, train_minutes_5000=minutes,
                      train_met=minutes <= GPU_MINUTES_5000)  # fmt: skip
    if "train_b8" in trainings:
        gib = trainings["train_b8"]["ours"]["peak_memory_gib"]
        result.update(batch8_gib_required=GPU_BATCH8_GIB, batch8_gib=gib, batch8_met=gib <= GPU_BATCH8_GIB)
    return result


def _file_name(config: BenchConfig, device: torch.device, date: str) -> str:
    name = "cpu" if device.type == "cpu" else re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower())
    tag = f"-{config.tag}" if config.tag else ""
    return f"{config.model}-{name.strip('-')}-{date}{tag}.json"
