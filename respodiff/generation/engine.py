"""Render a manifest into an image store: batched, seeded per image, resumable, sharded over processes.

Every image gets its own CPU `torch.Generator` seeded with the manifest's seed, so its starting noise (and DDIM's
eta noise) is the same on any device and in any batch. The h-space editor is set per pipeline call with one
weight row per image, so each image gets exactly its own concept.

Bit-identity (what makes an image independent of batch size, process count and resume point)
- Batches are fixed chunks of the manifest (rows [k*B, (k+1)*B)); a process renders whole batches (batch j of
  the unfinished ones goes to process j % world) and on resume a batch with any missing image is rendered again
  whole, writing only the missing images. So with one batch size every image sees the same batch neighbours
  whatever the process count or resume point: bit-identical wherever kernels are deterministic for fixed shapes
  (CPU; CUDA on the same GPU model and library versions with cuDNN benchmarking off, diffusers' default).
- Across batch sizes, CPU kernels are not row-independent. Measured on the tiny model (torch 2.15): MKL computes a
  Linear with 1-3 rows by another kernel than with more (the time embedding of a batch of 1), oneDNN
  convolutions and GroupNorm take other paths for channels-last strides that appear at some batch sizes only (the
  VAE mid-block attention's output), and vectorised sigmoid/SiLU compute the tail of a tensor with a scalar
  routine, so which elements fall in the tail depends on the batch (the tiny text encoder's width of 37).
  Differences are ~1e-6 but flip 8-bit pixels now and then (4 of 32 tiny images, batch 8 vs 1).
  `batch_invariant=True` (the default on CPU) therefore runs the pipeline once per image: on the tiny model
  1.3x slower than batches of 8. On CUDA the default is batched (`batch_invariant=False`): cuBLAS/cuDNN choose
  kernels by shape, so an image rendered in a batch of 8 is expected to differ from the same image in a batch
  of 1 by rounding (in fp16 an occasional +-1 in an 8-bit value), never in content. Resume a GPU store with the
  batch size it was started with to keep it bit-identical; `batch_invariant=True` buys independence from the
  batch size on GPU too, at the cost of batching.

Multi-process: `torchrun --nproc_per_node N` (CPU, gloo, with PartialState(cpu=True)) or, on GPUs,
`accelerate launch --multi_gpu --num_processes N run.py experiment=... stage=generate` with the pipeline loaded
on `PartialState().device`. (`accelerate launch --cpu --num_processes 2` starts one process only.) Each process
writes its own images and its own `manifest.shard-<rank>.parquet`; after a barrier the main process merges them
into `manifest.parquet`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError, RespodiffError
from ..hspace import hspace_shape
from ..io import module_digest
from ..modules import TransformationSet, check_compatible
from .plan import DONE, SamplerSettings, weights_of
from .render import RENDERER_ARGUMENTS, ImageWriter, Renderer, execution_device
from .store import (
    MANIFEST_FILE,
    check_store,
    manifest_hash,
    present_rows,
    read_manifest,
    remove_leftovers,
    shard_file,
    shard_progress,
    with_status,
    write_manifest,
    write_store_record,
)

log = logging.getLogger(__name__)

# Bump when a change to this engine changes pixels: stores made by the old engine are then refused, not mixed.
ENGINE_VERSION = 1

Transformations = TransformationSet | Mapping[str, TransformationSet] | None


def generate(
    pipe,
    manifest: pd.DataFrame,
    store_dir: str | os.PathLike,
    transformations: Transformations,
    sampler: SamplerSettings,
    parts: Sequence[str] | None = None,
    *,
    model_identity: str | None = None,
    batch_invariant: bool | None = None,
    flush_every: int = 8,
    progress: bool = True,
    verify_threads: int = 8,
    pipeline_kwargs: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Render the manifest's missing images into `store_dir`; return the finished manifest (paths relative).

    pipe: a loaded diffusers SD / SDXL pipeline (loaded once per process, on `PartialState().device` when
        several processes run).
    transformations: one TransformationSet (module keys = its concept names), a dict of named sets (keys
        "<set>/<concept>", e.g. {"gender": ..., "race": ...} for composition) or None (base model rows only).
    parts: which parts of each concept to apply (default all: RAM + SAM), e.g. ["ram"].
    model_identity: what the store and the modules' base-model check name the model by (ModelSpec.identity);
        default the pipeline's name_or_path.
    batch_invariant: one pipeline call per image, so images do not depend on batch size (default: on CPU only).
    flush_every: write the manifest (or this process's shard) every this many batches.
    pipeline_kwargs: extra keyword arguments of every pipeline call (e.g. SLD's sld_guidance_scale); they change
        pixels, so they are part of the store's identity.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    store = Path(store_dir)
    device = execution_device(pipe)
    state = PartialState(cpu=device.type == "cpu")
    rank, world = state.process_index, state.num_processes
    if batch_invariant is None:
        batch_invariant = device.type == "cpu"
    if flush_every < 1:
        raise ConfigError(f"flush_every must be >= 1, got {flush_every}")

    # Everything that can be wrong is checked before the first image, identically on every process.
    manifest = manifest.reset_index(drop=True)
    _check_manifest(manifest, sampler)
    modules = resolve_modules(transformations, manifest, parts)
    pipeline_kwargs = _check_pipeline_kwargs(pipeline_kwargs)
    # The base-model check needs the name modules record (ModelSpec.identity); a folder path would never match.
    _check_modules_fit(transformations, pipe, sampler, base_model=model_identity)
    identity = store_identity(
        pipe, manifest, modules, parts, model_identity or _pipeline_name(pipe), pipeline_kwargs
    )
    existing = check_store(store, identity)
    state.wait_for_everyone()  # every process has read the store before the main process writes to it
    if state.is_main_process:
        if not existing:
            write_store_record(store, identity, _store_info(pipe, sampler, batch_invariant))
        remove_leftovers(store)
    state.wait_for_everyone()

    # Reconcile: the files decide what is done. Each process checks every world-th row; all learn the union.
    checked = manifest.iloc[rank::world]
    missing_here = [
        image_id
        for image_id, ok in zip(checked["image_id"], present_rows(store, checked, verify_threads))
        if not ok
    ]
    missing = set(gather_object(missing_here))
    present = set(manifest["image_id"]) - missing
    total = len(manifest)
    if state.is_main_process:
        _write_if_changed(store, with_status(manifest, present))
    if not missing:
        if state.is_main_process:
            log.info("all %d images present; nothing to generate (%s)", total, store)
        state.wait_for_everyone()
        return with_status(manifest, present)

    batches = [
        manifest.iloc[start : start + sampler.batch_size] for start in range(0, total, sampler.batch_size)
    ]
    unfinished = [batch for batch in batches if missing.intersection(batch["image_id"])]
    mine = unfinished[rank::world]
    if state.is_main_process:
        log.info(
            "%d of %d images to generate in %d batches of %d on %d process(es) into %s",
            len(missing),
            total,
            len(unfinished),
            sampler.batch_size,
            world,
            store,
        )
    if world > 1 and device.type != "cpu" and device != state.device:
        log.warning("process %d renders on %s, not its own device %s", rank, device, state.device)

    written: list[str] = []
    flush_target = store / MANIFEST_FILE if world == 1 else shard_file(store, rank)

    def flush(writer: ImageWriter, raise_errors: bool = True) -> None:
        complete, failure = writer.finished()  # only images whose file is complete are recorded
        written.extend(complete)
        if world == 1:
            write_manifest(flush_target, with_status(manifest, present | set(written)))
        elif written:
            write_manifest(flush_target, with_status(manifest[manifest["image_id"].isin(written)], written))
        if failure is not None and raise_errors:
            raise failure

    renderer = Renderer(pipe, modules, sampler, batch_invariant, pipeline_kwargs)
    count = sum(len(missing.intersection(batch["image_id"])) for batch in mine)
    started = time.perf_counter()
    with (
        renderer,
        ImageWriter() as writer,
        _progress_bar(count, progress and state.is_main_process, rank, world) as bar,
    ):
        try:
            for number, batch in enumerate(mine, start=1):
                todo = batch["image_id"].isin(missing).to_numpy()
                for row, image in renderer.render(batch, todo):
                    writer.submit(store / row["path"], image, {"respodiff": _png_text(row)}, row["image_id"])
                    bar.update(1)
                if number % flush_every == 0:
                    flush(writer)
        except BaseException:
            flush(writer, raise_errors=False)  # record what reached the disk, then report the first failure
            raise
        flush(writer)
    elapsed = time.perf_counter() - started
    log.info(
        "process %d generated %d images in %.1f s (%.2f images/s)",
        rank,
        len(written),
        elapsed,
        len(written) / max(elapsed, 1e-9),
    )

    state.wait_for_everyone()
    if world > 1 and state.is_main_process:
        done = present | shard_progress(store)
        write_manifest(store / MANIFEST_FILE, with_status(manifest, done))
        for other in range(world):
            shard_file(store, other).unlink(missing_ok=True)
    state.wait_for_everyone()
    finished = read_manifest(store)
    done = set(finished.loc[finished["status"] == DONE, "image_id"])
    if len(done) != total:
        raise RespodiffError(
            f"{total - len(done)} images of {store} are still missing after generation; rerun to complete them"
        )
    return with_status(manifest, done)


# ---------------------------------------------------------------------------------------------------------------
# Checks and identity


def _check_manifest(manifest: pd.DataFrame, sampler: SamplerSettings) -> None:
    if manifest.empty:
        raise ConfigError("the manifest has no rows: nothing to generate")
    duplicated = manifest["image_id"][manifest["image_id"].duplicated()].tolist()
    if duplicated:
        raise ConfigError(f"the manifest repeats image ids {duplicated[:5]}")
    for key, value in sampler.image_settings().items():
        if not (manifest[key] == value).all():
            found = sorted(manifest[key].unique().tolist())[:5]
            raise ConfigError(
                f"the manifest was built with {key}={found}, but generation was asked for {key}={value}; "
                "build the manifest with the same SamplerSettings"
            )


def module_keys(transformations: Transformations) -> dict[str, tuple[TransformationSet, str, str]]:
    """Module key -> (set, concept, where) for every concept the loaded modules know."""
    if transformations is None:
        return {}
    if isinstance(transformations, TransformationSet):
        return {
            concept: (transformations, concept, "transformations") for concept in transformations.concepts
        }
    return {
        f"{name}/{concept}": (tset, concept, f"transformations[{name!r}]")
        for name, tset in transformations.items()
        for concept in tset.concepts
    }


def resolve_modules(
    transformations: Transformations, manifest: pd.DataFrame, parts: Sequence[str] | None
) -> dict[str, nn.Module]:
    """Module key -> inference transformation, for every key a manifest row uses (sorted by key)."""
    used = sorted({key for weights in manifest["concept_weights"] for key in weights_of(weights)})
    known = module_keys(transformations)
    unknown = [key for key in used if key not in known]
    if unknown and not known:
        raise ConfigError(
            f"the manifest applies h-space concepts {unknown} but no modules were given; "
            "train them first (stage=train) or use a plan without concepts (mode 'none')"
        )
    if unknown:
        raise ConfigError(f"unknown concept(s) {unknown} for the loaded modules; they know {sorted(known)}")
    modules = {}
    for key in used:
        tset, concept, where = known[key]
        try:
            modules[key] = tset.transformation(concept, parts)
        except KeyError as failure:
            available = sorted(tset.modules[concept])
            raise ConfigError(
                f"{where}: concept {concept!r} has parts {available}, none of {list(parts or [])}"
            ) from failure
    return modules


def _check_modules_fit(
    transformations: Transformations, pipe, sampler: SamplerSettings, base_model: str | None
) -> None:
    if transformations is None:
        return
    scale = pipe.vae_scale_factor
    expected = hspace_shape(pipe.unet, sampler.height // scale, sampler.width // scale)
    for _key, (tset, _concept, where) in module_keys(transformations).items():
        check_compatible(tset.metadata, expected, base_model, where=where)


def store_identity(
    pipe,
    manifest: pd.DataFrame,
    modules: Mapping[str, nn.Module],
    parts: Sequence[str] | None,
    model_identity: str,
    pipeline_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What an image store is bound to; a store holding anything else is refused."""
    identity = {
        "engine": ENGINE_VERSION,
        "model": model_identity,
        "pipeline": type(pipe).__name__,
        "dtype": str(pipe.unet.dtype),
        "images": manifest_hash(manifest),
        "n_images": len(manifest),
        "modules": {key: module_digest(module) for key, module in modules.items()},
        "parts": sorted(parts) if parts else "all",
    }
    if pipeline_kwargs:  # only when given, so stores made before this key existed keep their identity
        identity["pipeline_kwargs"] = dict(sorted(pipeline_kwargs.items()))
    return identity


def _check_pipeline_kwargs(pipeline_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(pipeline_kwargs or {})
    clashing = sorted(set(kwargs) & RENDERER_ARGUMENTS)
    if clashing:
        raise ConfigError(
            f"pipeline_kwargs may not set {clashing}: the manifest and SamplerSettings decide those"
        )
    return kwargs


def _pipeline_name(pipe) -> str:
    return str(
        getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path", "") or type(pipe).__name__
    )


def _store_info(pipe, sampler: SamplerSettings, batch_invariant: bool) -> dict[str, Any]:
    """Recorded, not enforced: a resume may change these (e.g. a smaller batch after running out of memory)."""
    import datetime as _dt

    import diffusers

    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(execution_device(pipe)),
        "batch_size": sampler.batch_size,
        "batch_invariant": batch_invariant,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }


def _write_if_changed(store: Path, manifest: pd.DataFrame) -> None:
    path = store / MANIFEST_FILE
    if path.is_file():
        try:
            saved = pd.read_parquet(path)
            if saved.equals(manifest):
                return
        except (OSError, ValueError):
            pass
    write_manifest(path, manifest)


def _png_text(row: Mapping[str, Any]) -> str:
    import json

    return json.dumps(
        {"image_id": row["image_id"], "seed": int(row["seed"]), "concept_weights": row["concept_weights"]}
    )


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool, rank: int, world: int) -> Iterator[Any]:
    from tqdm.auto import tqdm

    description = "generate" if world == 1 else f"generate (process {rank} of {world})"
    with tqdm(total=total, unit="img", desc=description, disable=not enabled, dynamic_ncols=True) as bar:
        yield bar
