"""Naive reference loops, written the way the public scripts work, to measure what the trainer and engine gain.

Training: every sample on its own (batch 1), in whatever precision the pipeline was loaded (the harness loads it in
fp32), the reverse process through a full CFG batch at every step, the three target predictions as three UNet calls,
and the guidance-1 predictions of both losses also through a full [uncond; cond] CFG batch whose unconditional half
is computed and thrown away.

Equal batch semantics: an iteration over B samples draws the same step indices and noise as the trainer's iteration
(the same seeded generator), averages each loss over the B samples by accumulating gradients, and steps RAM once and
then SAM once, with L_sem evaluated under the updated RAM, exactly as `respodiff.training` does. So both loops compute
the same updates (up to float rounding) and the speed ratio compares like with like.

Generation: one image per pipeline call, and the pipeline loaded from disk again for every image, as a per-image
script does; each PNG is written before the next image starts.

Nothing outside `benchmarks/speed` uses this file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from respodiff.generation import weights_of
from respodiff.hspace import HSpaceEditor
from respodiff.seeding import stable_seed


def _embed(pipe, prompt: str) -> torch.Tensor:
    tokens = pipe.tokenizer(
        [prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    )  # fmt: skip
    with torch.no_grad():
        return pipe.text_encoder(tokens.input_ids.to(pipe.device))[0]


def _cfg_call(unet, z: torch.Tensor, t: torch.Tensor, uncond: torch.Tensor, cond: torch.Tensor):
    """The public scripts' UNet call: always the two-row [uncond; cond] batch, split afterwards."""
    out = unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    return out.chunk(2)


def naive_train(
    pipe,
    concept_name: str,
    ram: nn.Module,
    sam: nn.Module,
    neutral_prompt: str,
    target_prompt: str,
    iterations: int,
    batch_size: int,
    latent_shape: Sequence[int],
    lambda_sem: float = 0.5,
    guidance_target: float = 4.0,
    guidance_reverse: float = 3.0,
    max_step_index: int = 48,
    num_inference_steps: int = 50,
    lr_ram: float = 1e-2,
    lr_sam: float = 1e-3,
    seed: int = 0,
) -> None:
    """`iterations` fairness iterations of RespoDiff (RAM + SAM, reference timestep), each over `batch_size` samples
    processed one by one. `ram` and `sam` are trained in place."""
    unet, scheduler = pipe.unet, pipe.scheduler
    device = unet.device
    editor = HSpaceEditor(unet)
    adam = dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    opt_ram = torch.optim.Adam(ram.parameters(), lr=lr_ram, **adam)
    opt_sam = torch.optim.Adam(sam.parameters(), lr=lr_sam, **adam)
    uncond, neutral, target = _embed(pipe, ""), _embed(pipe, neutral_prompt), _embed(pipe, target_prompt)
    try:
        for iteration in range(iterations):
            # The trainer's draws for this iteration, so both loops see the same k and noise.
            generator = torch.Generator().manual_seed(stable_seed(seed, concept_name, iteration))
            step_index = torch.randint(0, max_step_index + 1, (batch_size,), generator=generator)
            noise = torch.randn((batch_size, *latent_shape), generator=generator)
            samples = []
            opt_ram.zero_grad()
            for i in range(batch_size):
                k = int(step_index[i])
                scheduler.set_timesteps(num_inference_steps)
                z = noise[i : i + 1].to(device) * scheduler.init_noise_sigma
                with torch.no_grad():
                    editor.set([ram, sam], cfg_half=True)
                    for step_t in scheduler.timesteps[:k]:
                        eps_u, eps_c = _cfg_call(unet, z, step_t, uncond, neutral)
                        z = scheduler.step(eps_u + guidance_reverse * (eps_c - eps_u), step_t, z).prev_sample
                    editor.clear()
                    t = torch.tensor([1000 - 20 * k], device=device)  # the public scripts: set_timesteps(1000)[20k]
                    eps_empty = unet(z, t, encoder_hidden_states=uncond).sample
                    eps_target = unet(z, t, encoder_hidden_states=target).sample
                    eps_neutral = unet(z, t, encoder_hidden_states=neutral).sample
                goal = eps_empty + guidance_target * (eps_target - eps_empty)
                editor.set([ram], cfg_half=True)
                _, eps_ram = _cfg_call(unet, z, t, uncond, neutral)
                editor.clear()
                (F.mse_loss(eps_ram, goal) / batch_size).backward()
                samples.append((z, t, eps_neutral))
            opt_ram.step()
            opt_sam.zero_grad()
            for z, t, eps_neutral in samples:
                editor.set([ram, sam], cfg_half=True)
                _, eps_both = _cfg_call(unet, z, t, uncond, neutral)
                editor.clear()
                (lambda_sem * F.mse_loss(eps_both, eps_neutral) / batch_size).backward()
            opt_sam.step()  # RAM's gradient from this pass is thrown away by the next zero_grad
    finally:
        editor.remove()


def naive_generate(
    load: Callable[[], object],
    rows: Sequence[Mapping],
    modules: Mapping[str, nn.Module],
    out_dir: Path,
    steps: int,
    guidance_scale: float,
    height: int,
    width: int,
) -> None:
    """One image per row: load the pipeline, apply the row's concept weights to the conditional half, render, save."""
    for row in rows:
        pipe = load()
        editor = HSpaceEditor(pipe.unet)
        weights = weights_of(row["concept_weights"])
        keys = [key for key in modules if weights.get(key, 0.0)]
        if keys:
            row_weights = torch.tensor([[weights[key] for key in keys]])
            editor.set([modules[key].to(pipe.device) for key in keys], row_weights, cfg_half=guidance_scale > 1)
        generator = torch.Generator("cpu").manual_seed(int(row["seed"]))
        image = pipe(
            row["prompt"], num_inference_steps=steps, guidance_scale=guidance_scale, height=height, width=width,
            generator=generator, output_type="pil",
        ).images[0]  # fmt: skip
        editor.remove()
        path = out_dir / row["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
