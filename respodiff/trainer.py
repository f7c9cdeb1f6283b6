"""Training of per-concept h-space transformations (PROTOCOL.md section 2).

For each concept the UNet, VAE and text encoders stay frozen and only the concept's modules learn:
- parts "ram_sam": RAM stepped on L_resp, then SAM on lambda * L_sem with the updated RAM (lambda = 0: RAM only);
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

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .errors import CheckpointMismatchError, ConfigError, RespodiffError
from .hspace import HSpaceEditor, hspace_shape
from .modules import (
    DEFAULT_INIT_SCALE,
    INITIALISATIONS,
    METADATA_FILE,
    PARAMETRIZATIONS,
    HSpaceTransform,
    TransformationSet,
)
from .objectives import (
    FAIRNESS_GUIDANCE,
    SAFETY_GUIDANCE,
    TIMESTEP_MODES,
    Conditioning,
    encode_text,
    fairness_target,
    resp_loss,
    reverse_latents,
    safety_target,
    score_timesteps,
    sem_loss,
)
from .provenance import git_hash
from .seeding import stable_seed

KINDS = ("fairness", "safety")
PART_MODES = ("ram_sam", "ram_only", "shared")
REVERSE_PARTS = ("all", "ram")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# How lambda acts. "loss" (PROTOCOL.md): L_sem is scaled by lambda; SAM's own Adam normalises that scale away, so
# lambda > 0 only switches SAM on (results/LOG.md). "lr": lambda also scales SAM's learning rate, relative to
# LAMBDA_REFERENCE, so that a lambda sweep moves the trade-off; at the reference both modes train identically.
LAMBDA_MODES = ("loss", "lr")
LAMBDA_REFERENCE = 0.5  # the paper's default lambda
CHECKPOINT_FILE = "state.pt"
CHECKPOINT_FORMAT = "respodiff.train_state/1"
LOSSES_FILE = "losses.csv"
LOSS_COLUMNS = ("concept", "iteration", "step", "loss_resp", "loss_sem")
# Settings that only say how often to report or save; changing them must not invalidate a checkpoint.
_BOOKKEEPING = ("iterations", "checkpoint_every", "log_every")

LogFn = Callable[[dict, int], None]


@dataclass
class ConceptSpec:
    """One concept to learn: fairness concepts name a target prompt, safety concepts a negative prompt."""

    name: str
    neutral_prompt: str
    target_prompt: str | None = None
    negative_prompt: str | None = None
    lr_ram: float = 1e-2
    lr_sam: float = 1e-3
    # Overrides TrainSettings.guidance_target for this concept alone: a target close to the neutral prompt can need a
    # different strength than its siblings (the toy world's "man", conf/concepts/toy_gender.yaml).
    guidance_target: float | None = None


@dataclass
class TrainSettings:
    """How to train (PROTOCOL.md section 2). Defaults match conf/train/default.yaml and conf/method/respodiff.yaml:
    the paper's lambda 0.5 and batch 1, and the public scripts' timestep (`reference`, t = 999 - 20k) and reverse
    process (`all`: RAM + SAM applied while sampling z_k). `exact` and `ram` are the alternatives.
    """

    kind: str = "fairness"
    guidance_target: float | None = None  # None: 4 for fairness, 12 for safety
    parts: str = "ram_sam"
    parametrization: str = "constant"
    init: str = "uniform"
    init_scale: float = DEFAULT_INIT_SCALE
    hidden_channels: int = 256  # mlp parametrization only
    lambda_sem: float = 0.5
    lambda_mode: str = "loss"
    iterations: int = 5000
    batch_size: int = 1
    guidance_reverse: float = 3.0
    max_step_index: int = 48
    num_inference_steps: int = 50
    timestep: str = "reference"
    reverse_parts: str = "all"
    precision: str = "auto"
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        choices = dict(
            kind=KINDS,
            parts=PART_MODES,
            parametrization=PARAMETRIZATIONS,
            init=INITIALISATIONS,
            timestep=TIMESTEP_MODES,
            reverse_parts=REVERSE_PARTS,
            precision=PRECISIONS,
            lambda_mode=LAMBDA_MODES,
        )
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} is {getattr(self, name)!r}; choose one of {allowed}")
        if not _is_finite_number(self.lambda_sem) or self.lambda_sem < 0:
            raise ConfigError(f"lambda_sem must be a finite number >= 0, got {self.lambda_sem!r}")
        for name in ("iterations", "batch_size", "num_inference_steps", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.max_step_index, int) or not 0 <= self.max_step_index < self.num_inference_steps:
            raise ConfigError(
                f"max_step_index must be in 0..{self.num_inference_steps - 1} (k DDIM steps of "
                f"{self.num_inference_steps}), got {self.max_step_index!r}"
            )
        for name in ("guidance_reverse", "init_scale"):
            if not _is_finite_number(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.guidance_target is not None and not _is_positive_number(self.guidance_target):
            raise ConfigError(f"guidance_target must be a positive number or null, got {self.guidance_target!r}")
        if self.init_scale < 0 or self.hidden_channels < 1:
            raise ConfigError("init_scale must be >= 0 and hidden_channels >= 1")

    @property
    def target_guidance(self) -> float:
        if self.guidance_target is not None:
            return float(self.guidance_target)
        return FAIRNESS_GUIDANCE if self.kind == "fairness" else SAFETY_GUIDANCE

    def concept_guidance(self, concept: ConceptSpec) -> float:
        """g_tar for one concept: its own, else the settings'."""
        return self.target_guidance if concept.guidance_target is None else float(concept.guidance_target)

    def sam_lr(self, concept: ConceptSpec) -> float:
        if self.lambda_mode == "lr":
            return concept.lr_sam * self.lambda_sem / LAMBDA_REFERENCE
        return concept.lr_sam

    @property
    def trains_sem(self) -> bool:
        """Whether the L_sem step runs (lambda = 0 makes it a no-op, so it is skipped, and SAM is not created)."""
        return self.parts != "ram_only" and self.lambda_sem > 0

    @property
    def module_parts(self) -> tuple[str, ...]:
        if self.parts == "shared":
            return ("shared",)
        return ("ram", "sam") if self.trains_sem else ("ram",)


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
    device = pipe.unet.device
    amp_dtype = _autocast_dtype(settings.precision, device, pipe.unet.dtype)
    latent_size = _latent_size(pipe.unet, h_shape)
    out_dir = Path(out_dir)
    modules_dir = out_dir / "modules"
    metadata = _metadata(concepts, settings, base_model, h_shape)
    finished = _load_finished_set(modules_dir, metadata)
    if finished is not None:
        return finished

    from diffusers import DDIMScheduler

    # A private scheduler: set_timesteps mutates it, and the pipeline's own must stay as the caller left it.
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(settings.num_inference_steps, device=device)
    editor = HSpaceEditor(pipe.unet)
    previous_edit = editor.hook.edit
    editor.clear()  # targets must come from the unedited model
    trained = {}
    try:
        for index, concept in enumerate(concepts):
            run = _ConceptRun(pipe, editor, scheduler, concept, settings, h_shape, latent_size, amp_dtype)
            fingerprint = _fingerprint(concept, settings, base_model, h_shape)
            trained[concept.name] = _train_concept(
                run, out_dir, fingerprint, step_offset=index * settings.iterations, log=log
            )
    finally:
        editor.hook.edit = previous_edit

    result = TransformationSet(trained, metadata)
    # Remove an older set's marker first, so a crash while overwriting never leaves a "finished" mix.
    (modules_dir / METADATA_FILE).unlink(missing_ok=True)
    result.save(modules_dir)
    return result


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
        self.amp_dtype = amp_dtype
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
        adam = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        self.optimizers = {"resp": torch.optim.Adam(self.resp_module.parameters(), lr=concept.lr_ram, **adam)}
        if self.sem_module is not None:
            self.optimizers["sem"] = torch.optim.Adam(self.sem_module.parameters(), lr=settings.sam_lr(concept), **adam)
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none.
        self.scaler = torch.amp.GradScaler(self.device.type) if amp_dtype == torch.float16 else None
        self.iteration = 0
        self.window = torch.zeros(2, device=self.device)  # loss sums since the last log row
        self.window_count = 0

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def step(self) -> None:
        s = self.settings
        generator = torch.Generator().manual_seed(stable_seed(s.seed, self.concept.name, self.iteration))
        step_index = torch.randint(0, s.max_step_index + 1, (s.batch_size,), generator=generator)
        noise = torch.randn((s.batch_size, *self.latent_shape), generator=generator)
        step_index, noise = step_index.to(self.device), noise.to(self.device)
        p = self.prompts
        with self.autocast():
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
        self._optimise("resp", loss_resp)
        losses = [loss_resp.detach(), torch.zeros((), device=self.device)]
        if self.sem_module is not None:
            with self.autocast():
                loss_sem = sem_loss(
                    self.pipe, self.editor, self.sem_fixed, self.sem_module, latents, t, p.neutral,
                    targets.sem, s.lambda_sem,
                )  # fmt: skip
            self._optimise("sem", loss_sem)
            losses[1] = loss_sem.detach()
        if self.scaler is not None:
            self.scaler.update()
        self.window += torch.stack(losses).float()
        self.window_count += 1
        self.iteration += 1

    def _optimise(self, name: str, loss: torch.Tensor) -> None:
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
        # set_to_none keeps the other part's grads None: each optimiser only ever sees its own loss's gradient.
        optimizer.zero_grad(set_to_none=True)

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
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "window": self.window.cpu(),
            "window_count": self.window_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for part, module in self.modules.items():
            module.load_state_dict(state["modules"][part])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.window = state["window"].to(self.device)
        self.window_count = int(state["window_count"])
        self.iteration = int(state["iteration"])


def _train_concept(
    run: _ConceptRun, out_dir: Path, fingerprint: str, step_offset: int, log: LogFn | None
) -> dict[str, HSpaceTransform]:
    settings, name = run.settings, run.concept.name
    checkpoint = out_dir / "checkpoints" / name / CHECKPOINT_FILE
    state = _load_checkpoint(checkpoint, fingerprint, settings.iterations)
    if state is not None:
        run.load_state_dict(state)
    losses_path = out_dir / LOSSES_FILE
    # Rows logged after the checkpoint belong to iterations that are about to run again.
    _trim_loss_rows(losses_path, name, run.iteration)
    bar = tqdm(total=settings.iterations, initial=run.iteration, desc=f"train {name}", unit="it", disable=None)
    try:
        while run.iteration < settings.iterations:
            run.step()
            bar.update(1)
            if run.iteration % settings.log_every == 0 or run.iteration == settings.iterations:
                _report(run, losses_path, step_offset, log, bar)
            if run.iteration % settings.checkpoint_every == 0 or run.iteration == settings.iterations:
                _save_checkpoint(checkpoint, run.state_dict(fingerprint))
    finally:
        bar.close()
    return run.modules


def _report(run: _ConceptRun, losses_path: Path, step_offset: int, log: LogFn | None, bar) -> None:
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
    _append_row(losses_path, row)
    bar.set_postfix(resp=f"{loss_resp:.4g}", **({} if loss_sem is None else {"sem": f"{loss_sem:.4g}"}))
    if log is not None:
        payload = {"loss/resp": loss_resp, "concept": run.concept.name, "iteration": run.iteration}
        if loss_sem is not None:
            payload["loss/sem"] = loss_sem
        log(payload, step)


# ---------------------------------------------------------------------------------------------------------------
# Checks before any UNet call


def validate_concepts(concepts: Sequence[ConceptSpec], settings: TrainSettings) -> None:
    if not concepts:
        raise ConfigError("no concepts to train: the concepts list is empty")
    names = [c.name for c in concepts]
    if len(set(names)) != len(names):
        raise ConfigError(f"concept names must be unique, got {names}")
    prompt_field = "target_prompt" if settings.kind == "fairness" else "negative_prompt"
    for concept in concepts:
        if not isinstance(concept.name, str) or not concept.name or concept.name in (".", "..") or any(
            ch in concept.name for ch in "/\\"
        ):
            raise ConfigError(f"concept name {concept.name!r} cannot name a folder")
        if not isinstance(concept.neutral_prompt, str) or not concept.neutral_prompt.strip():
            raise ConfigError(f"concept {concept.name!r} has no neutral prompt")
        prompt = getattr(concept, prompt_field)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{settings.kind} concept {concept.name!r} needs a {prompt_field}, got {prompt!r}")
        if concept.guidance_target is not None and not _is_positive_number(concept.guidance_target):
            raise ConfigError(f"concept {concept.name!r}: guidance_target must be a positive number or null")
        learning_rates = {"lr_ram": concept.lr_ram} | ({"lr_sam": concept.lr_sam} if settings.trains_sem else {})
        for key, value in learning_rates.items():
            if not _is_positive_number(value):
                raise ConfigError(f"concept {concept.name!r}: {key} must be a positive number, got {value!r}")


def _autocast_dtype(precision: str, device: torch.device, unet_dtype: torch.dtype) -> torch.dtype | None:
    """None = no autocast. CPU trains in fp32 unless bf16 is asked for; CUDA autocasts the UNet to half precision by
    default. Modules and optimiser state stay fp32 either way."""
    if device.type != "cuda":
        if precision in ("auto", "fp32"):
            return None
        if precision == "bf16" and device.type == "cpu":
            # Pays only on CPUs with bf16 instructions (AVX512-BF16, AMX); results/speed records where it was measured.
            return torch.bfloat16
        raise ConfigError(f"train.precision={precision} needs a CUDA device; on {device.type} use fp32, auto or bf16")
    if precision == "fp32":
        return None
    if precision == "auto":
        # Follow fp16 weights rather than recasting them to bf16 on every call; otherwise prefer bf16's range.
        if unet_dtype == torch.float16 or not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _latent_size(unet, h_shape: Sequence[int]) -> tuple[int, int]:
    """The latent size whose bottleneck has `h_shape`; the modules are built for exactly that shape."""
    if len(h_shape) != 3:
        raise ConfigError(f"h_shape must be (C, H, W), got {tuple(h_shape)}")
    factor = 2 ** (len(unet.config.down_block_types) - 1)
    size = (int(h_shape[1]) * factor, int(h_shape[2]) * factor)
    if hspace_shape(unet, *size) != tuple(int(x) for x in h_shape):
        raise ConfigError(
            f"h_shape {tuple(h_shape)} does not fit this UNet: its bottleneck at latent size {size} is "
            f"{hspace_shape(unet, *size)}"
        )
    return size


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_positive_number(value: Any) -> bool:
    return _is_finite_number(value) and value > 0


# ---------------------------------------------------------------------------------------------------------------
# Provenance, checkpoints and the loss log


def _fingerprint(concept: ConceptSpec, settings: TrainSettings, base_model: str, h_shape) -> str:
    """Everything that shapes a concept's training trajectory; a checkpoint resumes only under the same one."""
    trajectory = {k: v for k, v in asdict(settings).items() if k not in _BOOKKEEPING}
    payload = dict(concept=asdict(concept), settings=trajectory, base_model=base_model, h_shape=list(h_shape))
    return json.dumps(payload, sort_keys=True)


def training_record(concepts, settings: TrainSettings, base_model: str, h_shape=None) -> dict[str, Any]:
    """How a set was trained, as saved under "run" in its metadata (JSON-normalised, so it compares with a loaded
    copy). Without h_shape: the part a caller can know before loading the model."""
    run: dict[str, Any] = dict(
        settings={k: v for k, v in asdict(settings).items() if k not in ("checkpoint_every", "log_every")},
        concepts=[asdict(c) for c in concepts],
        base_model=base_model,
    )
    if h_shape is not None:
        run["h_shape"] = list(h_shape)
    return json.loads(json.dumps(run, sort_keys=True))


def _metadata(concepts, settings: TrainSettings, base_model: str, h_shape) -> dict[str, Any]:
    import diffusers

    return {
        "base_model": base_model,
        "h_shape": list(h_shape),
        "kind": settings.kind,
        "parametrization": settings.parametrization,
        "parts": settings.parts,
        "lambda_sem": settings.lambda_sem,
        "iterations": settings.iterations,
        "batch_size": settings.batch_size,
        "prompts": {
            c.name: {"neutral": c.neutral_prompt, "target": c.target_prompt, "negative": c.negative_prompt}
            for c in concepts
        },
        "learning_rates": {c.name: {"ram": c.lr_ram, "sam": c.lr_sam} for c in concepts},
        "settings": asdict(settings),
        "run": training_record(concepts, settings, base_model, h_shape),
        "git_hash": git_hash(),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _load_finished_set(modules_dir: Path, metadata: dict[str, Any]) -> TransformationSet | None:
    if not (modules_dir / METADATA_FILE).is_file():
        return None
    saved = json.loads((modules_dir / METADATA_FILE).read_text())
    if saved.get("run") != metadata["run"]:
        return None  # trained differently (e.g. fewer iterations): the checkpoints decide what to do
    return TransformationSet.load(modules_dir, tuple(metadata["h_shape"]), metadata["base_model"])


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)  # readers see the old or the new checkpoint, never half of one


def _load_checkpoint(path: Path, fingerprint: str, iterations: int) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != fingerprint:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written by a run with other settings, prompts or base model; "
            "use a new output folder or delete the checkpoint to start over"
        )
    if state["iteration"] > iterations:
        raise CheckpointMismatchError(
            f"checkpoint {path} is at iteration {state['iteration']}, beyond the requested {iterations}; "
            "use a new output folder to train fewer iterations"
        )
    return state


def _append_row(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOSS_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()
        os.fsync(handle.fileno())


def _trim_loss_rows(path: Path, concept: str, keep_through: int) -> None:
    """Drop the concept's rows past `keep_through` and any row a crash cut short; rewrite atomically."""
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept = [
        row
        for row in rows
        if None not in row.values()
        and None not in row
        and row["iteration"].isdigit()
        and not (row["concept"] == concept and int(row["iteration"]) > keep_through)
    ]
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOSS_COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(temporary, path)
