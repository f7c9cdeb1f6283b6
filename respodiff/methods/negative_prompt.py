"""The negative-prompt baseline: plain SD whose classifier-free guidance pushes away from text.

Safety concepts: every image gets the unsafe concepts as its negative prompt ("violence, sexual"), the cheap
baseline every safety paper can be compared with.

Fairness concepts (this project's definition; the RespoDiff paper has no such row): each image is assigned a
concept exactly as the h-space methods assign one (balanced or uniform, by the same manifest position and seed),
and its negative prompt names the *other* concepts' target prompts. An image meant to show "a woman" is generated
with negative prompt "a man"; with race, "a white person" gets "a black person, an asian person". No module is
applied: the manifest's concept column keeps the label, its concept weights stay empty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..errors import ConfigError
from .base import Method, register_method


def fairness_negative_prompts(manifest: pd.DataFrame, concepts: Mapping[str, Any], sampling: str) -> pd.DataFrame:
    """Per image: the assigned concept as label and the other concepts' target prompts as negative prompt."""
    from ..generation import ConceptPlan

    items = concepts["items"]
    names = list(items)
    if len(names) < 2:
        raise ConfigError(f"negative_prompt on fairness concepts needs two or more concepts, got {names}")
    targets = {name: str(items[name]["target_prompt"]) for name in names}
    plan = ConceptPlan(mode="fair", concepts=names, sampling=sampling)
    out = manifest.copy()
    labels, negatives = [], []
    for ordinal, seed in enumerate(out["seed"]):
        concept, _ = plan.assign(ordinal, int(seed))
        labels.append(concept)
        negatives.append(", ".join(targets[other] for other in names if other != concept))
    out["concept"] = labels
    out["negative_prompt"] = negatives
    out["concept_weights"] = json.dumps({})
    return out


def safety_negative_prompt(concepts: Mapping[str, Any]) -> str:
    """The safety concepts' negative prompts joined, e.g. "violence, sexual"."""
    items = concepts["items"].values()
    return ", ".join(item["negative_prompt"] for item in items if item.get("negative_prompt"))


@register_method
class NegativePromptMethod(Method):
    kind = "negative_prompt"

    def validate(self, arch: str) -> None:
        if self.concepts["kind"] == "fairness" and len(self.concept_names) < 2:
            raise ConfigError("negative_prompt on fairness concepts needs two or more concepts (one is avoided per image)")

    def adjust_manifest(self, manifest: pd.DataFrame, sampling: str) -> pd.DataFrame:
        if self.concepts["kind"] == "fairness":
            return fairness_negative_prompts(manifest, self.concepts, sampling)
        out = manifest.copy()
        out["negative_prompt"] = safety_negative_prompt(self.concepts)
        return out
