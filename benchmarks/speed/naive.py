"""Naive reference loops, written the way the public scripts work, to measure what our engine gains.

Training: one sample at a time, fp32, the reverse process through a full CFG batch at every step, and the
guidance-1 prediction of the losses also through both CFG halves (the unconditional half is computed and thrown
away). Generation: batch 1, the pipeline loaded from disk again for every batch.

They compute the same quantities as the suite's trainer and engine (same objective, same sampler), so the speed
ratio compares like with like; they are not used anywhere but in `benchmarks/speed`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
import torch.nn.functional as F

from respodiff.hspace import HSpaceEditor


def _embed(pipe, prompt: str) -> torch.Tensor:
    tokens = pipe.tokenizer(
        [prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        return pipe.text_encoder(tokens.input_ids.to(pipe.device))[0]


def naive_train_iterations(
    pipe,
    ram: torch.nn.Module,
    sam: torch.nn.Module,
    neutral_prompt: str,
    target_prompt: str,
    iterations: int,
    batch_size: int,
    lambda_sem: float = 0.5,
    guidance_target: float = 4.0,
    guidance_reverse: float = 3.0,
    max_step_index: int = 48,
    num_inference_steps: int = 50,
    lr_ram: float = 1e-2,
    lr_sam: float = 1e-3,
    seed: int = 0,
    on_iteration: Callable[[int], None] | None = None,
) -> None:
    """`iterations` fairness iterations of RespoDiff, each over `batch_size` samples processed one by one."""
    unet, scheduler = pipe.unet, pipe.scheduler
    editor = HSpaceEditor(unet)
    opt_ram = torch.optim.Adam(ram.parameters(), lr=lr_ram)
    opt_sam = torch.optim.Adam(sam.parameters(), lr=lr_sam)
    uncond, neutral, target = _embed(pipe, ""), _embed(pipe, neutral_prompt), _embed(pipe, target_prompt)
    rng = random.Random(seed)
    latent_size = unet.config.sample_size
    channels = unet.config.in_channels
    try:
        for iteration in range(iterations):
            for _ in range(batch_size):
                k = rng.randint(0, max_step_index)
                scheduler.set_timesteps(num_inference_steps)
                z = torch.randn(1, channels, latent_size, latent_size, device=pipe.device)
                with torch.no_grad():
                    for t in scheduler.timesteps[:k]:
                        editor.set([ram, sam], cfg_half=True)
                        eps_u, eps_c = unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, neutral])).sample.chunk(2)
                        editor.clear()
                        z = scheduler.step(eps_u + guidance_reverse * (eps_c - eps_u), t, z).prev_sample
                t = torch.tensor(999 - 20 * k, device=pipe.device)
                with torch.no_grad():
                    eps_empty = unet(z, t, encoder_hidden_states=uncond).sample
                    eps_target = unet(z, t, encoder_hidden_states=target).sample
                    eps_neutral = unet(z, t, encoder_hidden_states=neutral).sample
                goal = eps_empty + guidance_target * (eps_target - eps_empty)
                editor.set([ram], cfg_half=True)
                _, eps_ram = unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, neutral])).sample.chunk(2)
                opt_ram.zero_grad()
                F.mse_loss(eps_ram, goal).backward()
                opt_ram.step()
                editor.set([ram, sam], cfg_half=True)
                _, eps_both = unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, neutral])).sample.chunk(2)
                opt_sam.zero_grad()
                (lambda_sem * F.mse_loss(eps_both, eps_neutral)).backward()
                opt_sam.step()
                editor.clear()
            if on_iteration is not None:
                on_iteration(iteration)
    finally:
        editor.remove()


def naive_generate(load: Callable[[], object], prompts: list[str], seeds: list[int], steps: int, guidance_scale: float,
                   height: int, width: int) -> list:
    """One image per call, and the pipeline loaded again for each one, as a per-image script does."""
    images = []
    for prompt, seed in zip(prompts, seeds):
        pipe = load()
        generator = torch.Generator("cpu").manual_seed(seed)
        result = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, height=height, width=width,
                      generator=generator, output_type="np")
        images.append(result.images[0])
    return images
