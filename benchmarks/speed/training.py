"""Training cases: our trainer (`train_transformations`, end to end) and the naive loop, on the same iterations.

An iteration's step indices and noise depend only on (seed, concept, iteration number), so every run of either
loop does exactly the same work, and the two loops' final modules can be compared number for number.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from respodiff.modules import HSpaceTransform
from respodiff.seeding import stable_seed
from respodiff.training import ConceptSpec, TrainSettings, train_transformations

from .naive import naive_train
from .pipelines import Models

# The public scripts' gender learning rates (PROTOCOL.md section 2): RAM 1e-2, SAM 1e-3 for "woman".
CONCEPT = ConceptSpec("woman", "a person", target_prompt="a woman", lr_ram=1e-2, lr_sam=1e-3)

State = dict[str, torch.Tensor]


def settings(batch_size: int, iterations: int, max_step_index: int, precision: str = "auto") -> TrainSettings:
    """The paper's fairness defaults (RAM + SAM, lambda 0.5, reference timestep, constant modules)."""
    return TrainSettings(
        iterations=iterations, batch_size=batch_size, max_step_index=max_step_index, precision=precision
    )


def step_indices(s: TrainSettings) -> list[int]:
    """The k of every sample of the run, drawn as the trainer draws them."""
    ks: list[int] = []
    for iteration in range(s.iterations):
        generator = torch.Generator().manual_seed(stable_seed(s.seed, CONCEPT.name, iteration))
        ks += torch.randint(0, s.max_step_index + 1, (s.batch_size,), generator=generator).tolist()
    return ks


def initial_modules(s: TrainSettings, h_shape: tuple[int, int, int]) -> dict[str, HSpaceTransform]:
    """RAM and SAM as the trainer initialises them (same seeds), for the naive loop to start from."""
    channels, height, width = h_shape
    return {
        part: HSpaceTransform(
            parametrization=s.parametrization, channels=channels, height=height, width=width, init=s.init,
            init_scale=s.init_scale, hidden_channels=s.hidden_channels, seed=stable_seed(s.seed, CONCEPT.name, part),
        )  # fmt: skip
        for part in ("ram", "sam")
    }


def _state(modules: dict[str, torch.nn.Module]) -> State:
    return {
        f"{part}/{key}": value.detach().float().cpu()
        for part, module in modules.items()
        for key, value in module.state_dict().items()
    }


def ours(models: Models, s: TrainSettings) -> Callable[[Path], State]:
    def run(folder: Path) -> State:
        trained = train_transformations(models.ours, [CONCEPT], s, folder, models.spec.identity, models.h_shape)
        return _state(trained.modules[CONCEPT.name])

    return run


def naive(models: Models, s: TrainSettings) -> Callable[[Path], State]:
    def run(folder: Path) -> State:
        device = models.naive.unet.device  # on a GPU, the harness moves the fp32 pipeline there for this case only
        modules = {part: module.to(device) for part, module in initial_modules(s, models.h_shape).items()}
        naive_train(
            models.naive, CONCEPT.name, modules["ram"], modules["sam"], CONCEPT.neutral_prompt, CONCEPT.target_prompt,
            iterations=s.iterations, batch_size=s.batch_size, latent_shape=models.latent_shape,
            lambda_sem=s.lambda_sem, guidance_target=s.target_guidance, guidance_reverse=s.guidance_reverse,
            max_step_index=s.max_step_index, num_inference_steps=s.num_inference_steps, lr_ram=CONCEPT.lr_ram,
            lr_sam=CONCEPT.lr_sam, seed=s.seed,
        )  # fmt: skip
        return _state(modules)

    return run


def agreement(ours_state: State, naive_state: State, s: TrainSettings, h_shape) -> dict[str, float]:
    """How far the two loops' final modules are apart, beside how far training moved them (the scale of it).

    Adam normalises each element's step by its gradient's size, so an element whose gradient is near Adam's eps
    can move by a visible fraction of the learning rate on a rounding difference: the largest element difference
    says little, the relative L2 distance says how alike the updates are.
    """
    start = _state(initial_modules(s, h_shape))
    diff = torch.cat([(ours_state[k] - naive_state[k]).flatten() for k in ours_state])
    update = torch.cat([(ours_state[k] - start[k]).flatten() for k in ours_state])
    return {
        "max_abs_param_diff": diff.abs().max().item(),
        "max_abs_param_update": update.abs().max().item(),
        "relative_param_diff": (diff.norm() / update.norm()).item(),
    }
