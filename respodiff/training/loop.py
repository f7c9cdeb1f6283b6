"""Training of per-concept h-space transformations (PROTOCOL.md section 2).

For each concept the UNet, VAE and text encoders stay frozen and only the concept's modules learn:
- parts "ram_sam": RAM stepped on L_resp, then SAM on lambda * L_sem with the updated RAM (lambda = 0: RAM only, or
  with lambda_zero "frozen_sam" RAM plus a SAM that keeps its initialisation, as the public scripts);
- parts "ram_only": RAM alone (the CoDSMa-style ablation; with parametrization "vector" it is CoDSMa);
- parts "shared": one module stepped by L_resp and then by lambda * L_sem (two Adam optimisers over the same
  parameters, learning rates lr_ram and lr_sam, exactly the RAM/SAM schedule with both roles in one module).

Each iteration draws its step indices and noise from a CPU generator seeded with
stable_seed(settings.seed, concept, iteration), so an iteration's data depend on nothing but its number, and a run
resumed from a checkpoint (modules + optimiser state + iteration) retraces the uninterrupted run bit for bit.

On disk, under out_dir:
    checkpoints/<concept>/state.pt   resumable state, replaced atomically (only the latest is kept)
    losses.csv                       loss curve rows, appended and flushed as they come
    modules/                         the final TransformationSet; its metadata.json is written last (= done)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..errors import RespodiffError
from ..hspace import HSpaceEditor
from ..modules import HSpaceTransform, TransformationSet
from ..objectives import (
    Conditioning,
    encode_text,
    fairness_target,
    resp_loss,
    reverse_latents,
    safety_target,
    score_timesteps,
    sem_loss,
)
from ..seeding import stable_seed
from .precision import MixedPrecision, adam, autocast_dtype, latent_size, training_weights
from .records import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    LOSS_COLUMNS,
    LOSSES_FILE,
    LossLog,
    finished_set,
    load_checkpoint,
    save_checkpoint,
    save_set,
    training_metadata,
    trajectory_fingerprint,
)
from .settings import ConceptSpec, TrainSettings, validate_concepts

LogFn = Callable[[dict, int], None]


def train_transformations(
    pipe,
    concepts: Sequence[ConceptSpec],
    settings: TrainSettings,
    out_dir: str | os.PathLike,
    base_model: str,
    h_shape: tuple[int, int, int],
    log: LogFn | None = None,
) -> TransformationSet:
    """Train every concept's modules (resuming from checkpoints, skipping finished concepts) and save the set.

    Returns at once with the saved set when out_dir/modules already holds one trained with the same settings.
    """
    settings.validate()
    validate_concepts(concepts, settings)
    out_dir = Path(out_dir)
    modules_dir = out_dir / "modules"
    metadata = training_metadata(concepts, settings, base_model, h_shape)
    # A set trained differently (e.g. fewer iterations) is no error: the checkpoints decide what to do.
    finished = finished_set(modules_dir, metadata["run"])
    if finished is not None:
        return finished
    with training_weights(pipe, settings.precision):
        trained = _train_all(pipe, concepts, settings, out_dir, base_model, h_shape, log)
    return save_set(modules_dir, trained, metadata, unet=pipe.unet)


def _train_all(pipe, concepts, settings, out_dir: Path, base_model, h_shape, log) -> dict[str, dict]:
    from diffusers import DDIMScheduler

    device = pipe.unet.device
    amp_dtype = autocast_dtype(settings.precision, device, pipe.unet.dtype)
    size = latent_size(pipe.unet, h_shape)

    # A private scheduler: set_timesteps mutates it, and the pipeline's own must stay as the caller left it.
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(settings.num_inference_steps, device=device)
    editor = HSpaceEditor(pipe.unet)
    trained = {}
    with editor.paused():  # targets must come from the unedited model
        for index, concept in enumerate(concepts):
            run = _ConceptRun(pipe, editor, scheduler, concept, settings, h_shape, size, amp_dtype)
            fingerprint = trajectory_fingerprint(concept, settings, base_model, h_shape)
            trained[concept.name] = _train_concept(
                run, out_dir, fingerprint, step_offset=index * settings.iterations, log=log
            )
    return trained


# ---------------------------------------------------------------------------------------------------------------
# One concept


@dataclass
class _Prompts:
    uncond: Conditioning
    neutral: Conditioning
    target: Conditioning | None
    negative: Conditioning | None


class _ConceptRun:
    """A concept's modules, optimisers and iteration counter, and the one training iteration that advances them."""

    def __init__(self, pipe, editor, scheduler, concept, settings, h_shape, latent_size, amp_dtype) -> None:
        self.pipe, self.editor, self.scheduler = pipe, editor, scheduler
        self.concept, self.settings = concept, settings
        self.device = pipe.unet.device
        self.latent_shape = (pipe.unet.config.in_channels, *latent_size)
        image_size = tuple(side * pipe.vae_scale_factor for side in latent_size)
        self.prompts = _Prompts(
            uncond=encode_text(pipe, None, image_size),
            neutral=encode_text(pipe, concept.neutral_prompt, image_size),
            target=encode_text(pipe, concept.target_prompt, image_size) if settings.kind == "fairness" else None,
            negative=encode_text(pipe, concept.negative_prompt, image_size) if settings.kind == "safety" else None,
        )
        channels, height, width = (int(x) for x in h_shape)
        self.modules = {
            part: HSpaceTransform(
                parametrization=settings.parametrization,
                channels=channels,
                height=height,
                width=width,
                init=settings.init,
                init_scale=settings.init_scale,
                hidden_channels=settings.hidden_channels,
                seed=stable_seed(settings.seed, concept.name, part),
            ).to(self.device)
            for part in settings.module_parts
        }
        self.resp_module = self.modules.get("ram", self.modules.get("shared"))
        self.sem_module = self.modules.get("sam", self.modules.get("shared")) if settings.trains_sem else None
        # In the SAM step the updated RAM stays applied but fixed; a shared module has no separate fixed part.
        self.sem_fixed = [self.modules["ram"]] if "sam" in self.modules else []
        self.reverse_modules = list(self.modules.values()) if settings.reverse_parts == "all" else [self.resp_module]
        self.optimizers = {"resp": adam(self.resp_module.parameters(), concept.lr_ram)}
        if self.sem_module is not None:
            self.optimizers["sem"] = adam(self.sem_module.parameters(), settings.sam_lr(concept))
        self.precision = MixedPrecision(self.device, amp_dtype)
        self.iteration = 0
        self.window = torch.zeros(2, device=self.device)  # loss sums since the last log row
        self.window_count = 0

    def step(self) -> None:
        s = self.settings
        generator = torch.Generator().manual_seed(stable_seed(s.seed, self.concept.name, self.iteration))
        step_index = torch.randint(0, s.max_step_index + 1, (s.batch_size,), generator=generator)
        noise = torch.randn((s.batch_size, *self.latent_shape), generator=generator)
        step_index, noise = step_index.to(self.device), noise.to(self.device)
        p = self.prompts
        with self.precision.autocast():
            latents = reverse_latents(
                self.pipe, self.scheduler, self.editor, self.reverse_modules, noise, step_index,
                p.uncond, p.neutral, s.guidance_reverse,
            )  # fmt: skip
            t = score_timesteps(self.scheduler, step_index, s.timestep)
            guidance = s.concept_guidance(self.concept)
            if s.kind == "fairness":
                neutral = p.neutral if self.sem_module is not None else None
                targets = fairness_target(self.pipe, latents, t, p.uncond, p.target, guidance, neutral)
            else:
                targets = safety_target(self.pipe, latents, t, p.negative, p.neutral, guidance)
            loss_resp = resp_loss(self.pipe, self.editor, self.resp_module, latents, t, p.neutral, targets.resp)
        self.precision.step(self.optimizers["resp"], loss_resp)
        losses = [loss_resp.detach(), torch.zeros((), device=self.device)]
        if self.sem_module is not None:
            with self.precision.autocast():
                loss_sem = sem_loss(
                    self.pipe, self.editor, self.sem_fixed, self.sem_module, latents, t, p.neutral,
                    targets.sem, s.lambda_sem,
                )  # fmt: skip
            self.precision.step(self.optimizers["sem"], loss_sem)
            losses[1] = loss_sem.detach()
        self.precision.update()
        self.window += torch.stack(losses).float()
        self.window_count += 1
        self.iteration += 1

    def take_window(self) -> tuple[float, float | None]:
        resp, sem = (self.window / self.window_count).tolist()
        self.window.zero_()
        self.window_count = 0
        return resp, (sem if self.sem_module is not None else None)

    def state_dict(self, fingerprint: str) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            "iteration": self.iteration,
            "modules": {part: module.state_dict() for part, module in self.modules.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "scaler": self.precision.state_dict(),
            "window": self.window.cpu(),
            "window_count": self.window_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for part, module in self.modules.items():
            module.load_state_dict(state["modules"][part])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.precision.load_state_dict(state["scaler"])
        self.window = state["window"].to(self.device)
        self.window_count = int(state["window_count"])
        self.iteration = int(state["iteration"])


def _train_concept(
    run: _ConceptRun, out_dir: Path, fingerprint: str, step_offset: int, log: LogFn | None
) -> dict[str, HSpaceTransform]:
    settings, name = run.settings, run.concept.name
    checkpoint = out_dir / "checkpoints" / name / CHECKPOINT_FILE
    state = load_checkpoint(checkpoint, fingerprint, settings.iterations)
    if state is not None:
        run.load_state_dict(state)
    losses = LossLog(out_dir / LOSSES_FILE, LOSS_COLUMNS)
    # Rows logged after the checkpoint belong to iterations that are about to run again.
    losses.trim(name, run.iteration)
    bar = tqdm(total=settings.iterations, initial=run.iteration, desc=f"train {name}", unit="it", disable=None)
    try:
        while run.iteration < settings.iterations:
            run.step()
            bar.update(1)
            if run.iteration % settings.log_every == 0 or run.iteration == settings.iterations:
                _report(run, losses, step_offset, log, bar)
            if run.iteration % settings.checkpoint_every == 0 or run.iteration == settings.iterations:
                save_checkpoint(checkpoint, run.state_dict(fingerprint))
    finally:
        bar.close()
    return run.modules


def _report(run: _ConceptRun, losses: LossLog, step_offset: int, log: LogFn | None, bar) -> None:
    loss_resp, loss_sem = run.take_window()
    values = [loss_resp] + ([loss_sem] if loss_sem is not None else [])
    if not all(math.isfinite(v) for v in values):
        raise RespodiffError(
            f"training of concept {run.concept.name!r} diverged at iteration {run.iteration} "
            f"(L_resp {loss_resp}, L_sem {loss_sem}); lower the learning rates or use precision=fp32"
        )
    step = step_offset + run.iteration
    row = dict(
        concept=run.concept.name,
        iteration=run.iteration,
        step=step,
        loss_resp=repr(loss_resp),
        loss_sem="" if loss_sem is None else repr(loss_sem),
    )
    losses.append(row)
    bar.set_postfix(resp=f"{loss_resp:.4g}", **({} if loss_sem is None else {"sem": f"{loss_sem:.4g}"}))
    if log is not None:
        payload = {"loss/resp": loss_resp, "concept": run.concept.name, "iteration": run.iteration}
        if loss_sem is not None:
            payload["loss/sem"] = loss_sem
        log(payload, step)
