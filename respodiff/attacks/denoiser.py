"""Noise predictions of the undefended and the defended model, as the white-box attack compares them.

Both are classifier-free-guided predictions at the run's sampler guidance (eval.sampler.guidance_scale), computed as
the pipeline computes them during sampling: eps(z, t, negative) + g (eps(z, t, prompt) - eps(z, t, negative)), with
- the undefended model: the base UNet, negative = the empty prompt;
- the defended model: the UNet the method's `prepare_pipeline` yields (ESD's weights), the method's h-space edit on
  the conditional half of the batch (HSpaceEditor, as generation applies it) and the method's negative prompt (the
  negative-prompt baseline) in place of the empty one.
The guided prediction, not the conditional one alone, is matched: a negative prompt acts only through guidance, and
the h-space modules act on the conditional half. Defences that act inside the sampler's loop (SLD: warm-up steps and
momentum over the trajectory) have no such per-timestep prediction; the white-box attack refuses them.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..hspace import HSpaceEditor


@dataclass
class Denoiser:
    """A guided noise predictor: `unet`, the negative prompt's embedding (1, L, D), the guidance scale and an
    optional h-space edit (transformations and one weight each) on the conditional half."""

    unet: nn.Module
    negative: torch.Tensor
    guidance: float
    transformations: list[nn.Module] | None = None
    weights: torch.Tensor | None = None

    def __call__(self, latents: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) guided prediction (float32) for latents (B, C, h, w), timesteps (B,) and text (B, L, D)."""
        rows = latents.shape[0]
        dtype = self.unet.dtype
        if self.guidance > 1.0:
            batch = torch.cat([latents, latents]).to(dtype)
            steps = torch.cat([timesteps, timesteps])
            context = torch.cat([self.negative.expand(rows, -1, -1), text]).to(dtype)
            with self._edit(cfg_half=True):
                unconditional, conditional = self.unet(batch, steps, encoder_hidden_states=context).sample.float().chunk(2)
            return unconditional + self.guidance * (conditional - unconditional)
        with self._edit(cfg_half=False):
            return self.unet(latents.to(dtype), timesteps, encoder_hidden_states=text.to(dtype)).sample.float()

    @contextlib.contextmanager
    def _edit(self, cfg_half: bool) -> Iterator[None]:
        if not self.transformations:
            yield
            return
        editor = HSpaceEditor(self.unet)
        with editor.editing(self.transformations, self.weights, cfg_half=cfg_half):
            yield


def independent_copy(unet: nn.Module) -> nn.Module:
    """A UNet with `unet`'s weights and no tie to it. copy.deepcopy is not enough: a hook already on the mid block
    (an h-space editor's) is copied with a forward that still runs the original's layers, so weights the method then
    changes in place (ESD's) would leak into the "undefended" copy."""
    twin = type(unet).from_config(unet.config)
    twin.load_state_dict(unet.state_dict())
    if twin.dtype != unet.dtype:
        twin = twin.to(dtype=unet.dtype)
    return twin.to(unet.device).requires_grad_(False).eval()


def defended_edit(method, transformations, sampling: str, compose) -> tuple[list[nn.Module], torch.Tensor] | None:
    """The h-space edit the method's generation applies to an image (its concept plan's first assignment: for a
    safety concept set every module with weight 1), or None when it applies none."""
    from ..generation import resolve_modules, weights_of

    if transformations is None:
        return None
    _, weights = method.concept_plan(sampling, compose).assign(0, 0)
    if not weights:
        return None
    frame = _one_row(concept_weights=json.dumps(weights, sort_keys=True))
    modules = resolve_modules(transformations, frame, method.inference_parts())
    for module in modules.values():
        module.eval().requires_grad_(False)
    weights = weights_of(weights)
    return list(modules.values()), torch.tensor([weights[key] for key in modules], dtype=torch.float32)


def method_negative_prompt(method, sampling: str) -> str:
    """The negative prompt the method's manifest gives an image ("" for methods without one)."""
    from ..generation import ConceptPlan, SamplerSettings, build_manifest

    table = _one_row(prompt_id="probe", prompt="probe")
    manifest = build_manifest("attack", table, 1, ConceptPlan(), SamplerSettings(height=8, width=8))
    return str(method.adjust_manifest(manifest, sampling)["negative_prompt"].iloc[0] or "")


def _one_row(**columns):
    import pandas as pd

    return pd.DataFrame([columns])


@torch.no_grad()
def trajectory_targets(denoiser: Denoiser, scheduler, text: torch.Tensor, latent_shape: tuple[int, ...],
                       n_latents: int, steps: int, eta: float, generator: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latents, timesteps, predictions) at every step of `n_latents` DDIM trajectories that `denoiser` samples for
    `text` (1, L, D) from seeded noise: the pairs (z_t, t) on the way to an image of the prompt, and the prediction
    there. With the undefended model these are the white-box attack's targets."""
    scheduler = copy.deepcopy(scheduler)  # set_timesteps changes the scheduler; the pipeline's stays as it was
    scheduler.set_timesteps(steps)
    device = text.device
    latents = torch.randn((n_latents, *latent_shape), generator=generator).to(device) * scheduler.init_noise_sigma
    texts = text.expand(n_latents, -1, -1)
    seen, times, predictions = [], [], []
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        step = torch.full((n_latents,), int(t), device=device, dtype=torch.long)
        prediction = denoiser(model_input, step, texts)
        seen.append(model_input)
        times.append(step)
        predictions.append(prediction)
        latents = scheduler.step(prediction.to(latents.dtype), t, latents, eta=eta, generator=generator).prev_sample
    return torch.cat(seen), torch.cat(times), torch.cat(predictions)
