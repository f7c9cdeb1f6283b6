"""When along the denoising does each attribute of a toy image settle? (check_toy_model --settling)

At every DDIM step the model's prediction of the clean image is decoded and read by the exact classifiers; an
attribute has settled at the first step from which the prediction agrees with the final image in at least
SETTLED_AGREEMENT of the samples. Guidance sharpens an attribute on the steps where it is still open, so this says
which guidance steps can move which attribute (results/LOG.md, 2026-12-02).
"""

from __future__ import annotations

import numpy as np
import torch

from .classifiers import classify
from .world import stable_int

SETTLED_AGREEMENT = 0.9
ATTRIBUTES = ("gender", "race", "kind")


@torch.no_grad()
def predicted_images(pipe, prompt: str, n: int, steps: int, guidance: float, seed: int) -> list[np.ndarray]:
    """The decoded clean-image prediction after each of `steps` DDIM steps, (n, H, W, 3) floats in [0, 1] each."""
    conditional, unconditional = pipe.encode_prompt(prompt, "cpu", n, True)
    size = pipe.unet.config.sample_size
    latents = torch.randn((n, pipe.unet.config.in_channels, size, size),
                          generator=torch.Generator().manual_seed(seed)) * pipe.scheduler.init_noise_sigma
    pipe.scheduler.set_timesteps(steps)
    out = []
    for t in pipe.scheduler.timesteps:
        eps_u, eps_c = pipe.unet(torch.cat([latents, latents]), t,
                                 encoder_hidden_states=torch.cat([unconditional, conditional])).sample.chunk(2)
        step = pipe.scheduler.step(eps_u + guidance * (eps_c - eps_u), t, latents)
        latents = step.prev_sample
        decoded = pipe.vae.decode(step.pred_original_sample / pipe.vae.config.scaling_factor).sample
        out.append((decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy())
    return out


def settling(pipe, prompts: list[str], n: int, steps: int, scales: list[float]) -> dict:
    """Per guidance scale and prompt: for each attribute, the share of samples whose prediction already agrees with
    the final image after each step, and the step from which it stays at or above SETTLED_AGREEMENT."""
    report: dict = {}
    for scale in scales:
        for prompt in prompts:
            reads = [classify(images) for images in
                     predicted_images(pipe, prompt, n, steps, scale, stable_int("settling", prompt) % 2**31)]
            rows = {}
            for attribute in ATTRIBUTES:
                final = reads[-1][attribute].to_numpy()
                agreement = [float((read[attribute].to_numpy() == final).mean()) for read in reads]
                settled = next(i for i in range(steps) if min(agreement[i:]) >= SETTLED_AGREEMENT)
                rows[attribute] = {"agreement_by_step": agreement, "settled_at_step": settled}
            report.setdefault(f"{scale:g}", {})[prompt] = rows
    return report
