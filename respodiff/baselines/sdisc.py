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
conditional half of the CFG batch.

Budgets (images, iterations, batch, learning rate) are this project's defaults, not numbers from the SDisc paper.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from ..errors import CheckpointMismatchError, ConfigError, RespodiffError
from ..modules import INITIALISATIONS, METADATA_FILE, PARAMETRIZATIONS, HSpaceTransform, TransformationSet
from ..seeding import stable_seed

log = logging.getLogger(__name__)

PART = "ram"
IMAGES_DIR = "sdisc/images"
DONE_DIR = "sdisc/concepts"  # each finished concept's vector, so an interrupted run keeps finished concepts
LOSSES_FILE = "sdisc/losses.csv"

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
        if self.kind not in ("fairness", "safety"):
            raise ConfigError(f"SDisc: concept kind {self.kind!r} is not fairness or safety")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(f"method.parametrization {self.parametrization!r} is not one of {PARAMETRIZATIONS}")
        if self.init not in INITIALISATIONS:
            raise ConfigError(f"method.init {self.init!r} is not one of {INITIALISATIONS}")
        for name in ("images_per_concept", "iterations", "batch_size", "steps", "image_batch_size", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"SDisc setting {name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"method.lr must be a positive number, got {self.lr!r}")
        if self.guidance_scale < 1:
            raise ConfigError(f"SDisc image guidance_scale must be >= 1, got {self.guidance_scale}")


def settings_from_config(cfg: Mapping[str, Any]) -> SDiscSettings:
    """From a resolved plain config: method keys, train.iterations / train.batch_size overriding the method's
    budget (as for every trained method, e.g. debug=fast), and the eval sampler for the training images."""
    method, train, sampler = cfg["method"], cfg.get("train") or {}, cfg["eval"]["sampler"]

    def pick(key: str, *sources: Mapping[str, Any]) -> Any:
        for source in sources:
            if source.get(key) is not None:
                return source[key]
        raise ConfigError(f"SDisc: no {key} configured")

    invariant = sampler.get("batch_invariant", "auto")
    return SDiscSettings(
        kind=cfg["concepts"]["kind"],
        images_per_concept=int(method["images_per_concept"]),
        iterations=int(pick("iterations", train, method)),
        batch_size=int(pick("batch_size", train, method)),
        lr=float(method["lr"]),
        parametrization=method["parametrization"],
        init=method["init"],
        init_scale=float(method["init_scale"]),
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
    run = _run_record(concepts, settings, base_model, h_shape)
    finished = _finished_set(modules_dir, run)
    if finished is not None:
        log.info("SDisc vectors already trained in %s", modules_dir)
        return finished
    if not concepts:
        raise ConfigError("SDisc: no concepts to learn")

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
    result = TransformationSet(trained, metadata)
    (modules_dir / METADATA_FILE).unlink(missing_ok=True)
    result.save(modules_dir)
    return result


def _run_record(concepts, settings: SDiscSettings, base_model: str, h_shape) -> dict[str, Any]:
    """Everything that shapes the vectors; a saved set is reused only under the same record."""
    ignored = ("log_every", "image_batch_size", "batch_invariant")
    return json.loads(json.dumps({
        "settings": {k: v for k, v in asdict(settings).items() if k not in ignored},
        "concepts": [{"name": c.name, "neutral": c.neutral_prompt, "images": image_prompts(c, settings.kind)}
                     for c in concepts],
        "base_model": base_model,
        "h_shape": list(h_shape),
    }, sort_keys=True))


def is_trained(modules_dir: str | os.PathLike, concepts: Sequence, settings: SDiscSettings, base_model: str) -> bool:
    """Whether modules_dir holds vectors learnt exactly so, judged without a model (the h-space shape aside)."""
    path = Path(modules_dir) / METADATA_FILE
    try:
        saved = dict(json.loads(path.read_text())["run"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    wanted = _run_record(concepts, settings, base_model, saved.get("h_shape", []))
    return saved == wanted


def _finished_set(modules_dir: Path, run: dict[str, Any]) -> TransformationSet | None:
    if not (modules_dir / METADATA_FILE).is_file():
        return None
    saved = json.loads((modules_dir / METADATA_FILE).read_text())
    if saved.get("run") != run:
        raise CheckpointMismatchError(
            f"{modules_dir} holds modules trained with other settings ({saved.get('method', 'another method')}); "
            "use a new run folder, or delete that folder to train again"
        )
    return TransformationSet.load(modules_dir, tuple(run["h_shape"]), run["base_model"])


def _concept_vector(pipe, concept, settings, out_dir, base_model, h_shape, run, index, log_fn) -> HSpaceTransform:
    done = out_dir / DONE_DIR / concept.name
    record = json.dumps({"run": run, "concept": concept.name}, sort_keys=True)
    if (done / "run.json").is_file() and (done / "run.json").read_text() == record:
        log.info("SDisc: concept %s already learnt (%s)", concept.name, done)
        return HSpaceTransform.from_pretrained(done).to(pipe.unet.device)
    latents = concept_latents(pipe, concept, settings, out_dir, base_model, image_size(pipe, h_shape))
    module = learn_vector(pipe, concept, latents, settings, h_shape, out_dir, step_offset=index * settings.iterations,
                          log_fn=log_fn)
    module.save_pretrained(done)
    (done / "run.json").write_text(record)  # written last: its presence marks the concept done
    return module


def concept_latents(
    pipe, concept, settings: SDiscSettings, out_dir: Path, base_model: str, size: int
) -> torch.Tensor:
    """The concept's training images (size x size px; generated once, then reused) as VAE latents."""
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
    from ..trainer import _latent_size

    latent_height, latent_width = _latent_size(pipe.unet, h_shape)
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

    from ..hspace import HSpaceEditor
    from ..objectives import encode_text, unet_eps
    from ..trainer import _autocast_dtype  # the trainer's precision policy, so both methods train alike

    device = pipe.unet.device
    channels, height, width = (int(x) for x in h_shape)
    module = HSpaceTransform(
        parametrization=settings.parametrization, channels=channels, height=height, width=width,
        init=settings.init, init_scale=settings.init_scale, hidden_channels=settings.hidden_channels,
        seed=stable_seed(settings.seed, "sdisc", concept.name),
    ).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    amp_dtype = _autocast_dtype(settings.precision, device, pipe.unet.dtype)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
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
    previous = editor.hook.edit
    # Summed on the device and read at log time only: a float() per iteration would sync a GPU every step.
    window, count = torch.zeros((), device=device), 0
    losses_path = out_dir / LOSSES_FILE
    try:
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
            autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
            with editor.editing([module]), autocast:
                loss = F.mse_loss(unet_eps(pipe, noisy, t, neutral).float(), target.float())
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            window, count = window + loss.detach().float(), count + 1
            if (iteration + 1) % settings.log_every == 0 or iteration + 1 == settings.iterations:
                value, window, count = float(window) / count, torch.zeros((), device=device), 0
                if not math.isfinite(value):
                    raise RespodiffError(f"SDisc training of {concept.name!r} diverged at iteration {iteration + 1}; "
                                         "lower method.lr or use train.precision=fp32")
                _append_loss(losses_path, concept.name, iteration + 1, value)
                if log_fn is not None:
                    log_fn({"loss/sdisc": value, "concept": concept.name}, step_offset + iteration + 1)
    finally:
        editor.hook.edit = previous
    return module


def _append_loss(path: Path, concept: str, iteration: int, loss: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["concept", "iteration", "loss"])
        writer.writerow([concept, iteration, repr(loss)])
