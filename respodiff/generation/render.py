"""How a batch of manifest rows becomes image files (PNG, or JPEG for eval.image_format=jpeg75): one stock
pipeline call with the rows' h-space edits (Renderer), and the writer that compresses and saves the images behind
it (ImageWriter).

generate() (engine.py) decides which rows to render and records what reached the disk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..hspace import HSpaceEditor
from .plan import SamplerSettings, weights_of
from .store import write_image

# Arguments the renderer itself passes; extra pipeline kwargs may not override them.
RENDERER_ARGUMENTS = frozenset(
    ("prompt", "negative_prompt", "generator", "num_inference_steps", "guidance_scale", "height", "width", "eta",
     "output_type")
)


def execution_device(pipe) -> torch.device:
    # With model CPU offload the modules sit on the CPU between calls; the pipeline still computes on the GPU.
    return torch.device(getattr(pipe, "_execution_device", None) or pipe.device)


class ImageWriter:
    """Writes images on background threads, so compression (~45 ms per 512 px PNG) overlaps the next batch's
    denoising.

    zlib and libjpeg release the GIL; at most `backlog` images wait in memory before the renderer waits for the disk.
    """

    def __init__(self, threads: int = 2, backlog: int = 64) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="image-writer")
        self.pending: list[tuple[str, Future]] = []
        self.backlog = backlog

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True)

    def submit(self, path: Path, image: Any, text: Mapping[str, str], image_id: str) -> None:
        for _, future in self.pending:  # stop rendering at the first failed write, not at the next flush
            if future.done() and future.exception() is not None:
                raise future.exception()
        self.pending.append((image_id, self.pool.submit(write_image, path, image, text)))
        if len(self.pending) >= self.backlog:
            wait([future for _, future in self.pending])

    def finished(self) -> tuple[list[str], BaseException | None]:
        """Wait for every submitted image: (ids written, the first failure or None)."""
        done, failure = [], None
        for image_id, future in self.pending:
            error = future.exception()
            if error is None:
                done.append(image_id)
            elif failure is None:
                failure = error
        self.pending = []
        return done, failure


class Renderer:
    """Calls the stock pipeline with the h-space edit of the rows being rendered.

    A context manager: it attaches the editor on entry and, unless the caller had one on this UNet already,
    removes it on exit, leaving the UNet as it found it.
    """

    def __init__(
        self,
        pipe,
        modules: Mapping[str, nn.Module],
        sampler: SamplerSettings,
        batch_invariant: bool,
        pipeline_kwargs: Mapping[str, Any] | None = None,
    ):
        self.pipe = pipe
        self.pipeline_kwargs = dict(pipeline_kwargs or {})
        self.keys = list(modules)
        self.transformations = [modules[key].to(execution_device(pipe)) for key in self.keys]
        self.sampler = sampler
        self.batch_invariant = batch_invariant
        # diffusers runs CFG as one [uncond; cond] batch; only the conditional half is edited (PROTOCOL.md section 3).
        self.cfg_half = (
            sampler.guidance_scale > 1.0 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None
        )
        self.editor: HSpaceEditor | None = None
        self._owns_editor = False

    def __enter__(self) -> Renderer:
        self._owns_editor = not HSpaceEditor.is_attached(self.pipe.unet)
        self.editor = HSpaceEditor(self.pipe.unet)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.editor is not None and self._owns_editor:
            self.editor.remove()
        self.editor = None

    def render(self, batch: pd.DataFrame, todo) -> Iterator[tuple[dict[str, Any], Any]]:
        """(row, PIL image) for every row with `todo` set. Batched mode renders the whole batch (fixed neighbours)."""
        rows = batch.to_dict("records")
        if self.batch_invariant:
            for row, wanted in zip(rows, todo):
                if wanted:
                    yield row, self._call([row])[0]
            return
        # SDXL zeroes the negative embedding only when no negative prompt is passed, so rows with and without
        # one are rendered in separate calls (each still a fixed group of the fixed batch).
        groups = [[r for r in rows if not r["negative_prompt"]], [r for r in rows if r["negative_prompt"]]]
        wanted_ids = {row["image_id"] for row, wanted in zip(rows, todo) if wanted}
        for group in groups:
            if group:
                for row, image in zip(group, self._call(group)):
                    if row["image_id"] in wanted_ids:
                        yield row, image

    def _call(self, rows: list[dict[str, Any]]) -> list[Any]:
        negative = [row["negative_prompt"] for row in rows]
        with self._edit(rows):
            output = self.pipe(
                prompt=[row["prompt"] for row in rows],
                negative_prompt=negative if any(negative) else None,
                # CPU generators: the same starting noise on every device, one stream per image.
                generator=[torch.Generator(device="cpu").manual_seed(int(row["seed"])) for row in rows],
                num_inference_steps=self.sampler.steps,
                guidance_scale=self.sampler.guidance_scale,
                height=self.sampler.height,
                width=self.sampler.width,
                eta=self.sampler.eta,
                output_type="pil",
                **self.pipeline_kwargs,
            )
        return output.images

    @contextlib.contextmanager
    def _edit(self, rows: list[dict[str, Any]]) -> Iterator[None]:
        weights = torch.tensor(
            [[weights_of(row["concept_weights"]).get(key, 0.0) for key in self.keys] for row in rows],
            dtype=torch.float32,
        )
        assert self.editor is not None
        if not self.keys or not torch.any(weights):
            with self.editor.paused():
                yield
            return
        with self.editor.editing(self.transformations, weights, cfg_half=self.cfg_half):
            yield
