"""A throwaway method that trains differently, registered from outside respodiff (tests/test_methods.py).

"Mean shift": each concept's module is a constant h-space offset, the mean difference between the bottleneck
under the concept's target prompt and under its neutral prompt, averaged over a few noisy latents, times
`method.scale`. No optimiser, no loss: one UNet call per prompt. Generation applies it like RespoDiff's modules.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from respodiff.methods import ModuleMethod, TrainingRun, register_method
from respodiff.modules import METADATA_FILE, HSpaceTransform, TransformationSet
from respodiff.objectives import encode_text, unet_eps

SAMPLES = 2
TIMESTEP = 500


@register_method
class MeanShift(ModuleMethod):
    kind = "mean_shift_test"
    keys = frozenset({"scale"})
    trains = True

    def record(self, base_model: str) -> dict:
        prompts = {name: [item["neutral_prompt"] if item.get("neutral_prompt") else self.concepts["neutral_prompt"],
                          item["target_prompt"]] for name, item in self.concepts["items"].items()}
        return {"scale": float(self.options["scale"]), "prompts": prompts, "base_model": base_model}

    def is_trained(self, modules_dir: Path, base_model: str) -> bool:
        path = modules_dir / METADATA_FILE
        return path.is_file() and json.loads(path.read_text()).get("mean_shift") == self.record(base_model)

    @torch.no_grad()
    def train(self, pipe, run: TrainingRun) -> None:
        channels, height, width = run.h_shape
        latent = height * 2 ** (len(pipe.unet.config.down_block_types) - 1)  # every down block but the last halves
        size = (latent * pipe.vae_scale_factor,) * 2
        generator = torch.Generator().manual_seed(0)
        latents = torch.randn((SAMPLES, pipe.unet.config.in_channels, latent, latent), generator=generator)
        latents = latents.to(pipe.unet.device)
        record = self.record(run.base_model)
        modules = {}
        for name, (neutral, target) in record["prompts"].items():
            shift = self._mean_h(pipe, target, latents, size) - self._mean_h(pipe, neutral, latents, size)
            module = HSpaceTransform(parametrization="constant", channels=channels, height=height, width=width,
                                     init="zeros")
            module.delta.copy_(record["scale"] * shift)
            modules[name] = {"ram": module}
        metadata = {"base_model": run.base_model, "h_shape": list(run.h_shape), "mean_shift": record}
        TransformationSet(modules, metadata).save(run.modules_dir)

    @staticmethod
    def _mean_h(pipe, prompt: str, latents: torch.Tensor, size) -> torch.Tensor:
        captured = []
        handle = pipe.unet.mid_block.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            unet_eps(pipe, latents, TIMESTEP, encode_text(pipe, prompt, size))
        finally:
            handle.remove()
        return captured[0].mean(dim=0)
