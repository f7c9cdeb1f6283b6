"""SDisc (Li et al., CVPR 2024, "Self-discovering interpretable diffusion latent directions"): one learned vector per
concept in h-space, found with the plain denoising loss on images the base model itself generates.

For each concept:
1. generate `images_per_concept` images of the concept with the base model, through the same generation engine
   (and the same per-image seeding) as every benchmark; they are kept in the run folder
   (`sdisc/images/<concept>/`), so a rerun reuses them;
2. encode them with the VAE (posterior mean, times the VAE's scaling factor);
3. learn a vector c added to h (`HSpaceTransform`, parametrization `vector` by default) such that the frozen UNet,
   conditioned on the concept's *neutral* prompt, denoises those latents: the standard DDPM loss
   MSE(eps_c(z_t, y_neutral), eps) at uniformly drawn training timesteps (velocity for v-prediction models).
   Whatever the neutral prompt leaves unsaid (the gender, the absence of violence), the vector has to supply.
Images of a concept: fairness concepts use their target prompt ("a woman"). Safety concepts have no prompt of
their own; we (this project, not the SDisc paper) generate the neutral prompt with the unsafe concept as the
negative prompt, so the vector learns "the neutral scene, steered away from the concept".

The vectors are saved as a TransformationSet (part "ram", like CoDSMa's single module) and generation applies
them exactly as it applies RespoDiff's modules: one concept per image for fairness, summed for safety, on the
conditional half of the CFG batch. Precision, the optimiser step, the loss log and the run records are the
training package's, shared with RespoDiff's loop.

Budgets (images, iterations, batch, learning rate) are this project's defaults, not numbers from the SDisc paper.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError, RespodiffError
from ..hspace import HSpaceEditor
from ..io import write_text_atomically
from ..modules import INITIALISATIONS, PARAMETRIZATIONS, HSpaceTransform, TransformationSet
from ..objectives import encode_text, unet_eps
from ..seeding import stable_seed
from .precision import MixedPrecision, adam, autocast_dtype, latent_size
from .records import LossLog, finished_set, run_record, save_set
from .settings import KINDS, PRECISIONS, budget, check_counts, config_number, is_positive_number

log = logging.getLogger(__name__)

PART = "ram"
IMAGES_DIR = "sdisc/images"
DONE_DIR = "sdisc/concepts"  # each finished concept's vector, so an interrupted run keeps finished concepts
LOSSES_FILE = "sdisc/losses.csv"
LOSS_COLUMNS = ("concept", "iteration", "loss")
# SDisc's budgets come from train.* or method.*; the concept sets' budgets are RespoDiff's paper budgets.
BUDGET_SECTIONS = ("train", "method")

LogFn = Callable[[dict, int], None]


@dataclass
class SDiscSettings:
    kind: str = "fairness"  # the concept set's kind: decides which images a concept is learnt from
    images_per_concept: int = 200
    iterations: int = 2000
    batch_size: int = 8
    lr: float = 1e-2
    parametrization: str = "vector"
    init: str = "uniform"
    init_scale: float = 1.0 / math.sqrt(10.0)
    hidden_channels: int = 256
    # sampler of the training images (the benchmarks' sampler unless the method sets its own)
    steps: int = 50
    guidance_scale: float = 7.5
    image_batch_size: int = 8
    batch_invariant: bool | None = None
    precision: str = "auto"
    log_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"SDisc: concept kind {self.kind!r} is not one of {KINDS}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(f"method.parametrization {self.parametrization!r} is not one of {PARAMETRIZATIONS}")
        if self.init not in INITIALISATIONS:
            raise ConfigError(f"method.init {self.init!r} is not one of {INITIALISATIONS}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision {self.precision!r} is not one of {PRECISIONS}")
        names = ("images_per_concept", "iterations", "batch_size", "steps", "image_batch_size", "log_every")
        check_counts(self, names, label="SDisc setting ")
        if not is_positive_number(self.lr):
            raise ConfigError(f"method.lr must be a positive number, got {self.lr!r}")
        if self.guidance_scale < 1:
            raise ConfigError(f"SDisc image guidance_scale must be >= 1, got {self.guidance_scale}")


def sdisc_settings(cfg: Mapping[str, Any]) -> SDiscSettings:
    """From a resolved plain config: method keys, train.iterations / train.batch_size overriding the method's
    budget (as for every trained method, e.g. debug=fast), and the eval sampler for the training images."""
    method, train, sampler = cfg["method"], cfg.get("train") or {}, cfg["eval"]["sampler"]
    invariant = sampler.get("batch_invariant", "auto")
    return SDiscSettings(
        kind=cfg["concepts"]["kind"],
        images_per_concept=config_number(method, "images_per_concept", "method", int),
        iterations=budget(cfg, "iterations", BUDGET_SECTIONS),
        batch_size=budget(cfg, "batch_size", BUDGET_SECTIONS),
        lr=config_number(method, "lr", "method", float),
        parametrization=method["parametrization"],
        init=method["init"],
        init_scale=config_number(method, "init_scale", "method", float),
        hidden_channels=int(method.get("hidden_channels") or 256),
        steps=int(method.get("image_steps") or sampler["steps"]),
        guidance_scale=float(method.get("image_guidance_scale") or sampler["guidance_scale"]),
        image_batch_size=int(sampler["batch_size"]),
        batch_invariant=None if invariant in (None, "auto") else bool(invariant),
        precision=str(train.get("precision", "auto")),
        seed=int(train.get("seed", cfg.get("seed", 0))),
    )


def image_prompts(concept, kind: str) -> tuple[str, str]:
    """(prompt, negative prompt) of the images a concept's vector is learnt from."""
    if kind == "fairness":
        if not concept.target_prompt:
            raise ConfigError(f"SDisc: fairness concept {concept.name!r} needs a target_prompt")
        return concept.target_prompt, ""
    if not concept.negative_prompt:
        raise ConfigError(f"SDisc: safety concept {concept.name!r} needs a negative_prompt")
    return concept.neutral_prompt, concept.negative_prompt


def sdisc_record(concepts, settings: SDiscSettings, base_model: str, h_shape=None) -> dict[str, Any]:
    """Everything that shapes the vectors, saved under "run" in the set's metadata; a saved set is reused only under
    the same record. Without h_shape: the part known before the model loads (for `records.is_trained`)."""
    ignored = ("log_every", "image_batch_size", "batch_invariant")
    return run_record(
        {k: v for k, v in asdict(settings).items() if k not in ignored},
        [{"name": c.name, "neutral": c.neutral_prompt, "images": image_prompts(c, settings.kind)} for c in concepts],
        base_model,
        h_shape,
    )


# ---------------------------------------------------------------------------------------------------------------


def train_sdisc(
    pipe,
    concepts: Sequence,
    settings: SDiscSettings,
    out_dir: str | os.PathLike,
    base_model: str,
    h_shape: tuple[int, int, int],
    log_fn: LogFn | None = None,
) -> TransformationSet:
    """Generate (or reuse) each concept's images, learn its vector, save the set to out_dir/modules."""
    out_dir = Path(out_dir)
    modules_dir = out_dir / "modules"
    run = sdisc_record(concepts, settings, base_model, h_shape)
    # No checkpoints here to resume from: a set trained otherwise is refused rather than overwritten.
    finished = finished_set(modules_dir, run, refuse_other=True)
    if finished is not None:
        log.info("SDisc vectors already trained in %s", modules_dir)
        return finished
    if not concepts:
        raise ConfigError("SDisc: no concepts to learn")
    autocast_dtype(settings.precision, pipe.unet.device, pipe.unet.dtype)  # refuse fp16 on CPU before any image

    trained = {}
    for index, concept in enumerate(concepts):
        trained[concept.name] = {
            PART: _concept_vector(pipe, concept, settings, out_dir, base_model, h_shape, run, index, log_fn)
        }
    metadata = {
        "method": "sdisc",
        "base_model": base_model,
        "h_shape": list(h_shape),
        "kind": settings.kind,
        "parametrization": settings.parametrization,
        "parts": "ram_only",
        "prompts": {
            c.name: {"neutral": c.neutral_prompt, "images": list(image_prompts(c, settings.kind))} for c in concepts
        },
        "settings": asdict(settings),
        "run": run,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return save_set(modules_dir, trained, metadata, unet=pipe.unet)


def _concept_vector(pipe, concept, settings, out_dir, base_model, h_shape, run, index, log_fn) -> HSpaceTransform:
    done = out_dir / DONE_DIR / concept.name
    record = json.dumps({"run": run, "concept": concept.name}, sort_keys=True)
    if (done / "run.json").is_file() and (done / "run.json").read_text() == record:
        log.info("SDisc: concept %s already learnt (%s)", concept.name, done)
        return HSpaceTransform.from_pretrained(done).to(pipe.unet.device)
    latents = concept_latents(pipe, concept, settings, out_dir, base_model, image_size(pipe, h_shape))
    # Rows of an interrupted attempt at this concept belong to iterations that are about to run again.
    LossLog(out_dir / LOSSES_FILE, LOSS_COLUMNS).trim(concept.name, 0)
    module = learn_vector(pipe, concept, latents, settings, h_shape, out_dir, step_offset=index * settings.iterations,
                          log_fn=log_fn)
    module.save_pretrained(done)
    write_text_atomically(done / "run.json", record)  # written last: its presence marks the concept done
    return module


def concept_latents(
    pipe, concept, settings: SDiscSettings, out_dir: Path, base_model: str, size: int
) -> torch.Tensor:
    """The concept's training images (size x size px; generated once, then reused) as VAE latents."""
    import pandas as pd

    from ..generation import ConceptPlan, SamplerSettings, build_manifest, generate, read_manifest

    prompt, negative = image_prompts(concept, settings.kind)
    sampler = SamplerSettings(steps=settings.steps, guidance_scale=settings.guidance_scale, height=size,
                              width=size, batch_size=settings.image_batch_size)
    table = pd.DataFrame({"prompt_id": [concept.name], "prompt": [prompt]})
    manifest = build_manifest("sdisc", table, settings.images_per_concept, ConceptPlan(mode="none"), sampler,
                              negative_prompt=negative)
    store = out_dir / IMAGES_DIR / concept.name
    generate(pipe, manifest, store, None, sampler, model_identity=base_model, batch_invariant=settings.batch_invariant)
    paths = read_manifest(store, absolute_paths=True)["path"].tolist()
    return encode_images(pipe, paths)


def image_size(pipe, h_shape: Sequence[int]) -> int:
    """The image side (px) whose bottleneck has `h_shape`: the resolution the vectors are learnt and used at."""
    latent_height, latent_width = latent_size(pipe.unet, h_shape)
    if latent_height != latent_width:
        raise ConfigError(f"SDisc learns at square resolutions; h-space {tuple(h_shape)} is not square")
    return latent_height * int(pipe.vae_scale_factor)


@torch.no_grad()
def encode_images(pipe, paths: Sequence[str], batch_size: int = 8) -> torch.Tensor:
    """VAE posterior means of the images, scaled like the latents the UNet denoises; on the UNet's device, fp32."""
    from PIL import Image

    vae = pipe.vae
    chunks = []
    for start in range(0, len(paths), batch_size):
        images = [Image.open(p).convert("RGB") for p in paths[start : start + batch_size]]
        pixels = pipe.image_processor.preprocess(images).to(device=vae.device, dtype=vae.dtype)
        chunks.append(vae.encode(pixels).latent_dist.mean.float() * vae.config.scaling_factor)
    return torch.cat(chunks)


def learn_vector(
    pipe,
    concept,
    latents: torch.Tensor,
    settings: SDiscSettings,
    h_shape: tuple[int, int, int],
    out_dir: Path,
    step_offset: int = 0,
    log_fn: LogFn | None = None,
) -> HSpaceTransform:
    """Fit the concept's vector with the denoising loss on its latents under the neutral prompt (frozen UNet)."""
    from diffusers import DDIMScheduler

    device = pipe.unet.device
    channels, height, width = (int(x) for x in h_shape)
    module = HSpaceTransform(
        parametrization=settings.parametrization, channels=channels, height=height, width=width,
        init=settings.init, init_scale=settings.init_scale, hidden_channels=settings.hidden_channels,
        seed=stable_seed(settings.seed, "sdisc", concept.name),
    ).to(device)
    optimizer = adam(module.parameters(), settings.lr)
    precision = MixedPrecision(device, autocast_dtype(settings.precision, device, pipe.unet.dtype))
    # A private scheduler: only its noise schedule is used, and the pipeline's own must stay as it is.
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    prediction = scheduler.config.prediction_type
    if prediction not in ("epsilon", "v_prediction"):
        raise ConfigError(f"SDisc: the model predicts {prediction!r}; only epsilon and v_prediction are supported")
    steps_total = int(scheduler.config.num_train_timesteps)
    size = image_size(pipe, h_shape)
    neutral = encode_text(pipe, concept.neutral_prompt, (size, size))
    latents = latents.to(device)
    editor = HSpaceEditor(pipe.unet)
    # Summed on the device and read at log time only: a float() per iteration would sync a GPU every step.
    window, count = torch.zeros((), device=device), 0
    losses = LossLog(out_dir / LOSSES_FILE, LOSS_COLUMNS)
    for iteration in range(settings.iterations):
        # Each iteration's draws depend only on its number, like the trainer's.
        generator = torch.Generator().manual_seed(stable_seed(settings.seed, "sdisc", concept.name, iteration))
        rows = torch.randint(0, latents.shape[0], (settings.batch_size,), generator=generator)
        t = torch.randint(0, steps_total, (settings.batch_size,), generator=generator)
        noise = torch.randn((settings.batch_size, *latents.shape[1:]), generator=generator)
        rows, t, noise = rows.to(device), t.to(device), noise.to(device)
        clean = latents[rows]
        noisy = scheduler.add_noise(clean, noise, t)
        target = noise if prediction == "epsilon" else scheduler.get_velocity(clean, noise, t)
        with editor.editing([module]), precision.autocast():
            loss = F.mse_loss(unet_eps(pipe, noisy, t, neutral).float(), target.float())
        precision.step(optimizer, loss)
        precision.update()
        window, count = window + loss.detach().float(), count + 1
        if (iteration + 1) % settings.log_every == 0 or iteration + 1 == settings.iterations:
            value, window, count = float(window) / count, torch.zeros((), device=device), 0
            if not math.isfinite(value):
                raise RespodiffError(f"SDisc training of {concept.name!r} diverged at iteration {iteration + 1}; "
                                     "lower method.lr or use train.precision=fp32")
            losses.append({"concept": concept.name, "iteration": iteration + 1, "loss": repr(value)})
            if log_fn is not None:
                log_fn({"loss/sdisc": value, "concept": concept.name}, step_offset + iteration + 1)
    return module
