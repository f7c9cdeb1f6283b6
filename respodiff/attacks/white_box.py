"""A white-box prompt-optimisation attack in the manner of UnlearnDiffAtk (Zhang et al., "To Generate or Not?
Safety-Driven Unlearned Diffusion Models Are Still Easy To Generate Unsafe Images ... For Now", ECCV 2024) and P4D
(Chin et al., "Prompting4Debugging: Red-Teaming Text-to-Image Diffusion Models by Finding Problematic Prompts",
ICML 2024). Written from the papers' descriptions.

Per source prompt:
1. Targets: the undefended model samples `latents` DDIM trajectories of the prompt from seeded noise (the run's
   sampler: steps, guidance, eta); every (z_t, t) on them is a training pair, and the undefended model's guided noise
   prediction there is its target (P4D's objective: what the unconstrained model predicts for the unsafe prompt).
2. `prompt_tokens` adversarial word tokens are put before the prompt (UnlearnDiffAtk's prefix; with
   keep_prompt=false they are the whole prompt, as P4D-N) and optimised so that the DEFENDED model's guided
   prediction for the new prompt matches the targets: continuous token embeddings updated by Adam on the gradient
   taken at their projection onto the nearest vocabulary word tokens (the projected-gradient scheme P4D takes from
   PEZ); each iteration draws `population` training pairs (the budget: iterations x population pairs).
3. The `finalists` best distinct projected token sequences seen are scored on every pair; the best is written out,
   re-tokenized and scored again as the string it is (`loss`); `loss_source` is the source prompt's own loss.
The defended model is what the method generates with (respodiff/attacks/denoiser.py): its UNet weights (ESD), its
h-space modules (RespoDiff and its ablations, SDisc), its negative prompt. SLD acts inside the sampler's loop and is
refused. The search runs in float32 (gradients through an fp16 UNet underflow).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .base import Attack, FoundPrompt, register_attack

EVALUATION_BATCH = 16  # pairs per UNet call when scoring without gradients


@register_attack
class WhiteBox(Attack):
    name = "white_box"
    keys = frozenset({"iterations", "population", "prompt_tokens", "lr", "latents", "finalists", "keep_prompt"})
    defaults = {"iterations": 40, "population": 4, "prompt_tokens": 5, "lr": 0.05, "latents": 2, "finalists": 4,
                "keep_prompt": True}
    searches = True
    needs_model = True
    depends_on_method = True

    def check_options(self) -> None:
        for key in ("prompt_tokens", "latents", "finalists"):
            self.integer(key, minimum=1)
        if self.number("lr", 0.0) <= 0:
            raise ConfigError(f"attack.lr must be > 0, got {self.options['lr']!r}")
        if not isinstance(self.options["keep_prompt"], bool):
            raise ConfigError(f"attack.keep_prompt must be true or false, got {self.options['keep_prompt']!r}")

    def check(self, method: Any, arch: str) -> None:
        if arch != "sd":
            raise ConfigError(f"attack {self.name} supports SD 1.x/2.x UNets; model.arch {arch!r} needs SDXL's added "
                              "text and time conditioning, which this attack does not build")

    def check_method(self, generation_options: Mapping[str, Any], method_name: str) -> None:
        """Before any model loads: a defence that acts through pipeline call arguments lives in the sampler."""
        if generation_options.get("pipeline_kwargs"):
            raise ConfigError(
                f"attack {self.name} cannot attack method {method_name!r}: its defence acts inside the sampler's loop "
                f"(pipeline arguments {sorted(generation_options['pipeline_kwargs'])}: SLD's safety guidance, with "
                "warm-up steps and momentum over the whole trajectory), so there is no per-timestep noise prediction "
                "to differentiate or match. Attack it with transferred prompts instead: find them with attack="
                "ring_a_bell, or with white_box against another method, and replay them (eval.benchmarks="
                "[attack_replay_toy] or [attack_replay])")

    def budget(self) -> dict[str, Any]:
        options = self.options
        steps = int(self.cfg["eval"]["sampler"]["steps"])
        return {**super().budget(), "unit": "(latent, timestep) pairs per iteration, one UNet forward+backward each",
                "target_trajectories": options["latents"], "trajectory_steps": steps,
                "finalist_evaluations": options["finalists"] * options["latents"] * steps}

    def setup(self, run) -> None:
        from .denoiser import Denoiser, defended_edit, independent_copy, method_negative_prompt
        from .text import TextSpace

        pipe, cfg, method = run.pipe, self.cfg, run.method
        sampler = cfg["eval"]["sampler"]
        self.steps, self.eta = int(sampler["steps"]), float(sampler["eta"])
        guidance = float(sampler["guidance_scale"])
        self.text = TextSpace(pipe.tokenizer, pipe.text_encoder)
        self.vocabulary, _ = self.text.word_tokens
        self.vocabulary_embeddings = self.text.token_embeddings(self.vocabulary)
        self.scheduler = pipe.scheduler
        resolution = run.spec.resolution // pipe.vae_scale_factor
        self.latent_shape = (int(pipe.unet.config.in_channels), resolution, resolution)
        # The method may change the UNet in place (ESD's weights): the undefended one is kept apart first.
        self.undefended = Denoiser(independent_copy(pipe.unet), self.text.embed([""]), guidance)
        defended_pipe = method.prepare_pipeline(pipe)
        transformations = method.load_modules(run.modules_dir, run.h_shape(defended_pipe), run.spec.identity,
                                              run.device)
        edit = defended_edit(method, transformations, cfg["eval"]["sampling"], cfg["eval"].get("compose"))
        negative = method_negative_prompt(method, cfg["eval"]["sampling"])
        self.defended = Denoiser(defended_pipe.unet, self.text.embed([negative]), guidance,
                                 *(edit or (None, None)))
        run.record["defence"] = {"h_space_modules": 0 if edit is None else len(edit[0]), "negative_prompt": negative,
                                 "guidance_scale": guidance}
        run.record["vocabulary"] = int(len(self.vocabulary))

    def find(self, source: Mapping[str, Any], seed: int) -> FoundPrompt:
        generator = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        prompt = str(source["prompt"])
        pool = self._targets(prompt, generator)
        kept = self.text.tokens(prompt) if self.options["keep_prompt"] else []
        seen = self._search(pool, kept, rng)
        losses: dict[tuple[int, ...], float] = {}

        def pool_loss(tokens: list[int]) -> float:
            if tuple(tokens) not in losses:
                losses[tuple(tokens)] = self._pool_loss(pool, tokens)
            return losses[tuple(tokens)]

        finalists = sorted(seen, key=seen.get)[: int(self.options["finalists"])]
        best = min(finalists, key=lambda key: pool_loss([*self.vocabulary[list(key)].tolist(), *kept]))
        words = self.text.text_of(self.vocabulary[list(best)].tolist())
        written = f"{words} {prompt}" if self.options["keep_prompt"] else words
        # Scored again as the string that is saved (it re-tokenizes to the searched tokens; a long prompt is cut).
        return FoundPrompt(written, loss=pool_loss(self.text.tokens(written)),
                           loss_source=pool_loss(self.text.tokens(prompt)),
                           details={"tokens": json.dumps(words.split()), "search_loss": float(seen[best])})

    def _targets(self, prompt: str, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        from .denoiser import trajectory_targets

        return trajectory_targets(self.undefended, self.scheduler, self.text.embed([prompt]), self.latent_shape,
                                  int(self.options["latents"]), self.steps, self.eta, generator)

    def _search(self, pool: tuple[torch.Tensor, ...], kept: list[int], rng: np.random.Generator
                ) -> dict[tuple[int, ...], float]:
        """Projected-gradient search; the lowest batch loss seen for each distinct projected token sequence."""
        latents, times, targets = pool
        count = int(self.options["prompt_tokens"])
        positions = list(range(1, count + 1))  # right after BOS
        table = self.vocabulary_embeddings
        start = rng.integers(len(self.vocabulary), size=count)
        soft = table[torch.from_numpy(start)].clone().requires_grad_(True)
        optimiser = torch.optim.Adam([soft], lr=float(self.options["lr"]))
        seen: dict[tuple[int, ...], float] = {}
        draw = min(int(self.options["population"]), len(latents))
        for _ in range(int(self.options["iterations"])):
            nearest = _nearest(soft.detach(), table)
            ids = self.text.ids([[*self.vocabulary[nearest].tolist(), *kept]])
            offset = torch.zeros((count, table.shape[1]), device=ids.device, requires_grad=True)
            chosen = torch.from_numpy(rng.choice(len(latents), size=draw, replace=False)).to(latents.device)
            text = self.text.embed_ids(ids, offset, positions).expand(draw, -1, -1)
            prediction = self.defended(latents[chosen], times[chosen], text)
            loss = ((prediction - targets[chosen]) ** 2).mean()
            loss.backward()
            # Straight-through: the gradient at the projected tokens moves the continuous embeddings.
            optimiser.zero_grad(set_to_none=True)
            soft.grad = offset.grad.detach().to(soft.dtype)
            optimiser.step()
            key = tuple(nearest.tolist())
            seen[key] = min(seen.get(key, math.inf), float(loss.detach()))
        return seen

    @torch.no_grad()
    def _pool_loss(self, pool: tuple[torch.Tensor, ...], tokens: list[int]) -> float:
        """Mean squared error of the defended prediction for `tokens` against the targets, over every pair."""
        latents, times, targets = pool
        text = self.text.embed_ids(self.text.ids([tokens]))
        step = max(EVALUATION_BATCH, int(self.options["population"]))
        total = 0.0
        for begin in range(0, len(latents), step):
            part = slice(begin, begin + step)
            prediction = self.defended(latents[part], times[part], text.expand(len(latents[part]), -1, -1))
            total += float(((prediction - targets[part]) ** 2).sum())
        return total / targets.numel()


def _nearest(points: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Index of the nearest row of `table` (Euclidean) for each row of `points`."""
    distances = (table ** 2).sum(dim=1)[None, :] - 2 * points @ table.T
    return distances.argmin(dim=1).cpu()
