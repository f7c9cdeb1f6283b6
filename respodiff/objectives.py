"""Score-matching objectives of RespoDiff (PROTOCOL.md section 2) as small functions over UNet calls.

Notation: eps(z, y) is the frozen UNet's noise prediction for latents z under prompt y, without any h-space edit;
eps_T(z, y) is the same prediction with transformation T added to h.

- fairness target: eps_tar = eps(z, "") + g * (eps(z, y_tar) - eps(z, ""))            (g = 4)
- safety target:   eps_tar = eps(z, y_bad) + g * (eps(z, y_neu) - eps(z, y_bad))       (g = 12)
- L_resp = MSE(eps_RAM(z, y_neu), eps_tar)
- L_sem  = lambda * MSE(eps_RAM+SAM(z, y_neu), eps(z, y_neu)), with RAM held fixed

The latents z are drawn by `reverse_latents`: k DDIM steps of the neutral prompt with CFG from fresh noise,
with the current transformation applied, each sample with its own k. The losses are averaged over every
element of the batch (mean-reduced MSE), like the public scripts.

The losses compare UNet *outputs*; for the epsilon-predicting models of the paper (SD 1.x, SDXL) these are eps.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .hspace import HSpaceEditor

FAIRNESS_GUIDANCE = 4.0
SAFETY_GUIDANCE = 12.0
# reference_v1: this project's earlier reading of the public scripts (T - 1 - stride * k, one timestep below theirs),
# kept only so the committed toy experiments, which pin it, reproduce their numbers.
TIMESTEP_MODES = ("reference", "exact", "reference_v1")


@dataclass
class Conditioning:
    """Everything a UNet call needs from the text: cross-attention states and, for SDXL, the added embeddings.

    Rows are prompts; a single row broadcasts to any batch (`expand`).
    """

    hidden_states: torch.Tensor
    text_embeds: torch.Tensor | None = None
    time_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.hidden_states.shape[0]

    def expand(self, rows: int) -> Conditioning:
        if len(self) == rows:
            return self
        if len(self) != 1:
            raise ValueError(f"cannot broadcast a conditioning of {len(self)} rows to {rows} rows")
        return Conditioning(*(None if x is None else x.expand(rows, *x.shape[1:]) for x in self._fields()))

    @staticmethod
    def cat(items: Sequence[Conditioning]) -> Conditioning:
        columns = zip(*(item._fields() for item in items))
        return Conditioning(*(None if column[0] is None else torch.cat(column) for column in columns))

    def added_cond_kwargs(self) -> dict[str, torch.Tensor] | None:
        if self.text_embeds is None:
            return None
        return {"text_embeds": self.text_embeds, "time_ids": self.time_ids}

    def _fields(self) -> tuple[torch.Tensor | None, ...]:
        return (self.hidden_states, self.text_embeds, self.time_ids)


@torch.no_grad()
def encode_text(pipe, prompt: str | None, image_size: tuple[int, int]) -> Conditioning:
    """One prompt as a one-row Conditioning; `None` gives the pipeline's own unconditional conditioning.

    The unconditional conditioning is what the pipeline's CFG uses: the embedding of "" for SD, and zeros for
    SDXL pipelines with `force_zeros_for_empty_prompt` (the default). Training therefore guides with the same
    "unconditional" prediction that generation later uses. `image_size` (pixels) feeds SDXL's size embedding.
    """
    device = pipe.unet.device
    text = "" if prompt is None else prompt
    if getattr(pipe, "text_encoder_2", None) is None:
        positive, negative = pipe.encode_prompt(text, device, 1, True)
        return Conditioning(negative if prompt is None else positive)
    positive, negative, pooled, negative_pooled = pipe.encode_prompt(text, device=device, num_images_per_prompt=1)
    height, width = image_size
    # SDXL's micro-conditioning, as the pipeline builds it by default: original size, crop (0, 0), target size.
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=positive.dtype, device=device)
    if prompt is None:
        return Conditioning(negative, negative_pooled, time_ids)
    return Conditioning(positive, pooled, time_ids)


def unet_eps(
    pipe_or_unet, latents: torch.Tensor, t: int | torch.Tensor, text_embeddings: Conditioning | torch.Tensor
) -> torch.Tensor:
    """The UNet's prediction for `latents` at timestep(s) `t` (scalar or one per row) under the given text.

    Whatever h-space edit is currently set on the UNet's editor applies; gradients flow when the caller allows.
    """
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    rows = latents.shape[0]
    cond = text_embeddings if isinstance(text_embeddings, Conditioning) else Conditioning(text_embeddings)
    cond = cond.expand(rows)
    timesteps = _per_row(t, rows, latents.device)
    dtype = compute_dtype(unet)
    added = cond.added_cond_kwargs()
    if added is not None:
        added = {key: value.to(dtype) for key, value in added.items()}
    return unet(
        latents.to(dtype),
        timesteps,
        encoder_hidden_states=cond.hidden_states.to(dtype),
        added_cond_kwargs=added,
    ).sample


_COMPUTE_DTYPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compute_dtype(unet: nn.Module) -> torch.dtype:
    """`unet.dtype`, looked up once per UNet and storage dtype.

    diffusers' `dtype` property visits every submodule looking for a layerwise-casting hook: ~3 ms per lookup on
    SD 1.x's UNet (measured on CPU), as long as a whole batch-1 UNet step takes on a GPU. The first parameter's
    dtype is the cache key, so `.to(dtype)` or enabling layerwise casting (which recasts the stored weights) is seen.
    """
    storage = next(unet.parameters()).dtype
    cached = _COMPUTE_DTYPES.get(unet)
    if cached is None or cached[0] != storage:
        cached = (storage, unet.dtype)
        _COMPUTE_DTYPES[unet] = cached
    return cached[1]


def batched_eps(
    pipe_or_unet, latents: torch.Tensor, t: int | torch.Tensor, conditionings: Sequence[Conditioning]
) -> list[torch.Tensor]:
    """eps(z, c) for every conditioning c, from ONE UNet call over the stacked copies of the batch."""
    rows = latents.shape[0]
    count = len(conditionings)
    stacked = unet_eps(
        pipe_or_unet,
        latents.repeat(count, 1, 1, 1),
        _per_row(t, rows, latents.device).repeat(count),
        Conditioning.cat([c.expand(rows) for c in conditionings]),
    )
    return list(stacked.chunk(count))


def _per_row(t: int | torch.Tensor, rows: int, device: torch.device) -> torch.Tensor:
    timesteps = torch.as_tensor(t, device=device)
    return timesteps.expand(rows) if timesteps.ndim == 0 else timesteps


def guided(base: torch.Tensor, toward: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free-guidance combination base + scale * (toward - base)."""
    return base + scale * (toward - base)


@dataclass
class Targets:
    """`resp`: eps_tar for L_resp; `sem`: eps(z, y_neu) for L_sem (None when not asked for)."""

    resp: torch.Tensor
    sem: torch.Tensor | None


@torch.no_grad()
def fairness_target(
    pipe_or_unet,
    latents: torch.Tensor,
    t: int | torch.Tensor,
    uncond: Conditioning,
    target: Conditioning,
    guidance: float = FAIRNESS_GUIDANCE,
    neutral: Conditioning | None = None,
) -> Targets:
    """eps(z, "") + g * (eps(z, y_tar) - eps(z, "")); with `neutral`, also eps(z, y_neu) from the same UNet call.

    Call with no h-space edit set: targets come from the unedited model.
    """
    conds = [uncond, target] + ([neutral] if neutral is not None else [])
    eps = batched_eps(pipe_or_unet, latents, t, conds)
    return Targets(guided(eps[0], eps[1], guidance), eps[2] if neutral is not None else None)


@torch.no_grad()
def safety_target(
    pipe_or_unet,
    latents: torch.Tensor,
    t: int | torch.Tensor,
    negative: Conditioning,
    neutral: Conditioning,
    guidance: float = SAFETY_GUIDANCE,
) -> Targets:
    """eps(z, y_bad) + g * (eps(z, y_neu) - eps(z, y_bad)): the negative concept takes the unconditional's place.

    eps(z, y_neu) is computed anyway, so it is returned as L_sem's target at no extra cost.
    """
    eps_bad, eps_neu = batched_eps(pipe_or_unet, latents, t, [negative, neutral])
    return Targets(guided(eps_bad, eps_neu, guidance), eps_neu)


class FrozenTransform(nn.Module):
    """Applies a module without recording a graph: in the SAM step RAM shapes h but receives no gradient."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # no_grad alone is not enough: a constant module returns its Parameter itself, which still requires grad.
        with torch.no_grad():
            return self.module(h).detach()


def resp_loss(
    pipe_or_unet,
    editor: HSpaceEditor,
    ram: nn.Module,
    latents: torch.Tensor,
    t: int | torch.Tensor,
    neutral: Conditioning,
    eps_target: torch.Tensor,
) -> torch.Tensor:
    """L_resp = MSE(eps_RAM(z, y_neu), eps_tar). Guidance scale 1: the conditional prediction alone, one UNet half.

    Only the decoder sees RAM's output, so gradients reach RAM through the decoder and nowhere else.
    """
    with editor.editing([ram], cfg_half=False):
        eps = unet_eps(pipe_or_unet, latents, t, neutral)
    return F.mse_loss(eps.float(), eps_target.float())


def sem_loss(
    pipe_or_unet,
    editor: HSpaceEditor,
    fixed: Sequence[nn.Module],
    trained: nn.Module,
    latents: torch.Tensor,
    t: int | torch.Tensor,
    neutral: Conditioning,
    eps_neutral: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """L_sem = weight * MSE(eps_{fixed+trained}(z, y_neu), eps(z, y_neu)); `fixed` (the updated RAM) gets no grad."""
    transformations = [FrozenTransform(module) for module in fixed] + [trained]
    with editor.editing(transformations, cfg_half=False):
        eps = unet_eps(pipe_or_unet, latents, t, neutral)
    return weight * F.mse_loss(eps.float(), eps_neutral.float())


def score_timesteps(scheduler, step_index: torch.Tensor, mode: str) -> torch.Tensor:
    """The timestep at which the score calls evaluate z_k, per sample.

    `exact`: the DDIM timestep z_k actually sits at, scheduler.timesteps[k] (981 - 20k for PROTOCOL's DDIM).
    `reference`: what the public scripts do: `set_timesteps(T)` on the same scheduler, then index k * (T / N). With
    SD's DDIM (steps_offset 1, leading spacing) that schedule is T, T-1, ..., 1, so t = 1000 - 20k: 19 timesteps
    noisier than where z_k sits. `reference_v1`: T - 1 - (T / N) * k (see TIMESTEP_MODES).
    `scheduler` must already hold its inference timesteps (`set_timesteps`).
    """
    if mode == "exact":
        return scheduler.timesteps.to(step_index.device)[step_index]
    train_steps = scheduler.config.num_train_timesteps
    stride = train_steps // scheduler.num_inference_steps
    if mode == "reference":
        return _full_schedule(scheduler).to(step_index.device)[stride * step_index]
    if mode == "reference_v1":
        return (train_steps - 1) - stride * step_index
    raise ValueError(f"timestep mode {mode!r} is not one of {TIMESTEP_MODES}")


_FULL_SCHEDULES: dict[str, torch.Tensor] = {}


def _full_schedule(scheduler) -> torch.Tensor:
    """The scheduler's timesteps after `set_timesteps(num_train_timesteps)`, computed on a copy by diffusers itself
    (so steps_offset and the spacing count exactly as in the scripts), once per scheduler configuration."""
    key = scheduler.config.__repr__()
    if key not in _FULL_SCHEDULES:
        full = type(scheduler).from_config(scheduler.config)
        full.set_timesteps(scheduler.config.num_train_timesteps)
        _FULL_SCHEDULES[key] = full.timesteps.clone()
    return _FULL_SCHEDULES[key]


@torch.no_grad()
def reverse_latents(
    pipe_or_unet,
    scheduler,
    editor: HSpaceEditor,
    transformations: Sequence[nn.Module],
    noise: torch.Tensor,
    step_index: torch.Tensor,
    uncond: Conditioning,
    neutral: Conditioning,
    guidance: float,
) -> torch.Tensor:
    """z_k: sample i takes step_index[i] DDIM steps from noise[i] with the neutral prompt and CFG `guidance`.

    The transformations edit the conditional half of the CFG batch only. All samples share the schedule, so
    step j runs once for the rows that still have steps to go (k > j); a row that reached its k stays as it is.
    The work is sum(k) rows of UNet calls rather than B * max(k). No graph is recorded.
    """
    latents = noise * scheduler.init_noise_sigma
    # Which rows are active at each step, and the timesteps as Python ints, are decided on the CPU: on a GPU the
    # loop then issues no device-to-host copy of its own (a CUDA-tensor timestep makes DDIM's step sync).
    steps = step_index.cpu()
    timesteps = scheduler.timesteps.tolist()
    conds: dict[int, Conditioning] = {}
    for j in range(int(steps.max()) if len(steps) else 0):
        active = steps > j
        rows = None if bool(active.all()) else torch.nonzero(active).squeeze(1).to(latents.device)
        current = latents if rows is None else latents[rows]  # all rows active: no gather or scatter needed
        count = len(current)
        t = timesteps[j]
        model_input = scheduler.scale_model_input(torch.cat([current, current]), t)
        if count not in conds:
            conds[count] = Conditioning.cat([uncond.expand(count), neutral.expand(count)])
        with editor.editing(transformations, cfg_half=True):
            eps = unet_eps(pipe_or_unet, model_input, t, conds[count]).float()
        eps_uncond, eps_cond = eps.chunk(2)
        stepped = scheduler.step(guided(eps_uncond, eps_cond, guidance), t, current).prev_sample.to(latents.dtype)
        latents = stepped if rows is None else latents.index_copy(0, rows, stepped)
    return latents
