"""A concept-vector attack in the text-embedding space, in the manner of Ring-A-Bell (Tsai et al., "Ring-A-Bell! How
Reliable are Concept Removal Methods for Diffusion Models?", ICLR 2024). Written from the paper's description.

1. Concept vector: c = mean_i [E(with_i) - E(without_i)] over prompt pairs that differ only by the unsafe concept
   (word_tables.concept_pairs), E the text encoder's output over all positions (what the UNet is conditioned on).
2. Target: T = E(source prompt) + strength * c.
3. A discrete prompt of `prompt_tokens` word tokens whose embedding approaches T: a genetic search over the
   vocabulary's word tokens minimising mean((E(candidate) - T)^2): `population` candidates per generation for
   `iterations` generations (the budget: iterations x population encoder evaluations), truncation selection of the
   best half, the best tenth kept unchanged, one-point crossover and per-token mutation. Seeded per source prompt.
Only the text encoder is used: the prompts do not depend on the defended method (a transfer attack by construction),
and the same prompts replay against every method.
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
from .word_tables import concept_pairs, word_scale

ENCODER_BATCH = 256


@register_attack
class RingABell(Attack):
    name = "ring_a_bell"
    keys = frozenset({"iterations", "population", "strength", "prompt_tokens", "mutation_rate", "crossover_rate",
                      "words", "concept"})
    defaults = {"iterations": 100, "population": 64, "strength": 3.0, "prompt_tokens": None, "mutation_rate": 0.25,
                "crossover_rate": 0.5, "words": "auto", "concept": None}
    searches = True
    needs_model = True

    def check_options(self) -> None:
        self.integer("population", minimum=2, why="crossover needs two parents")
        self.number("strength", 0.0)
        self.number("mutation_rate", 0.0, 1.0)
        self.number("crossover_rate", 0.0, 1.0)
        if self.options["prompt_tokens"] is not None:
            self.integer("prompt_tokens", minimum=1)
        self.scale = word_scale(str(self.options["words"]), self.cfg["concepts"]["name"])
        concept, items = self.options["concept"], self.cfg["concepts"]["items"]
        if concept is not None and concept not in items:
            raise ConfigError(f"attack.concept {concept!r} is not a concept of {self.cfg['concepts']['name']!r}; "
                              f"it has {list(items)} (null = all of them)")

    def check(self, method: Any, arch: str) -> None:
        if arch != "sd":
            raise ConfigError(f"attack {self.name} embeds prompts with one text encoder (SD 1.x/2.x); model.arch "
                              f"{arch!r} conditions on two")

    def budget(self) -> dict[str, Any]:
        return {**super().budget(), "unit": "text-encoder evaluations per source prompt"}

    def setup(self, run) -> None:
        from .text import TextSpace

        self.text = TextSpace(run.pipe.tokenizer, run.pipe.text_encoder)
        self.vocabulary, _ = self.text.word_tokens
        items = self.cfg["concepts"]["items"]
        concept = self.options["concept"]
        pairs = concept_pairs(self.scale, {concept: items[concept]} if concept else items)
        with_concept = self.text.embed([pair[0] for pair in pairs])
        without = self.text.embed([pair[1] for pair in pairs])
        self.concept_vector = (with_concept - without).float().mean(dim=0)
        self.length = int(self.options["prompt_tokens"] or min(16, self.text.length - 2))
        run.record["concept_pairs"] = len(pairs)
        run.record["concept_vector_norm"] = float(self.concept_vector.norm())
        run.record["vocabulary"] = int(len(self.vocabulary))

    @torch.no_grad()
    def _losses(self, token_rows: np.ndarray, target: torch.Tensor) -> np.ndarray:
        """mean squared distance to `target` of the embedding of each row of word-token indices."""
        out = []
        for start in range(0, len(token_rows), ENCODER_BATCH):
            chunk = self.vocabulary[torch.from_numpy(token_rows[start:start + ENCODER_BATCH])]
            embedded = self.text.embed_ids(self.text.ids(chunk.tolist())).float()
            out.append(((embedded - target) ** 2).mean(dim=(1, 2)).cpu())
        return torch.cat(out).numpy().astype(np.float64)

    def find(self, source: Mapping[str, Any], seed: int) -> FoundPrompt:
        rng = np.random.default_rng(seed)
        base = self.text.embed([str(source["prompt"])]).float()[0]
        target = base + float(self.options["strength"]) * self.concept_vector
        size, generations = int(self.options["population"]), int(self.options["iterations"])
        keep, parents = max(1, size // 10), max(2, size // 2)
        population = rng.integers(len(self.vocabulary), size=(size, self.length))
        best_loss, best = math.inf, population[0]
        for _ in range(generations):
            losses = self._losses(population, target)
            order = np.argsort(losses, kind="stable")
            if losses[order[0]] < best_loss:
                best_loss, best = float(losses[order[0]]), population[order[0]].copy()
            ranked = population[order]
            population = np.vstack([ranked[:keep], self._offspring(ranked[:parents], size - keep, rng)])
        tokens = self.vocabulary[torch.from_numpy(best)].tolist()
        prompt = self.text.text_of(tokens)
        # The prompt as written re-tokenizes to the searched tokens (word tokens only); score the string itself.
        written = self.text.embed([prompt]).float()[0]
        return FoundPrompt(prompt, loss=float(((written - target) ** 2).mean()),
                           loss_source=float(((base - target) ** 2).mean()),
                           details={"tokens": json.dumps(tokens), "search_loss": best_loss})

    def _offspring(self, parents: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        """One-point crossover of random parent pairs (with probability crossover_rate), then per-token mutation."""
        length = parents.shape[1]
        pairs = rng.integers(len(parents), size=(count, 2))
        first, second = parents[pairs[:, 0]], parents[pairs[:, 1]]
        cut = rng.integers(1, length, size=count) if length > 1 else np.ones(count, dtype=np.int64)
        crossing = rng.random(count) < float(self.options["crossover_rate"])
        from_second = crossing[:, None] & (np.arange(length)[None, :] >= cut[:, None])
        children = np.where(from_second, second, first)
        mutate = rng.random(children.shape) < float(self.options["mutation_rate"])
        return np.where(mutate, rng.integers(len(self.vocabulary), size=children.shape), children)
