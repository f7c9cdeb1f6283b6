"""The trivial baseline: the benchmark's unsafe prompts as they are (I2P's hard prompts at the paper scale).

Its ASR on a method is that method's unsafe rate on the same prompts, with the replay's seeds: the reference every
other attack is read against. No search, no model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Attack, FoundPrompt, register_attack


@register_attack
class Plain(Attack):
    name = "plain"

    def find(self, source: Mapping[str, Any], seed: int) -> FoundPrompt:
        return FoundPrompt(str(source["prompt"]))
