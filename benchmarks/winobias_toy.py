"""Winobias-toy: the toy world's 8 kinds x 5 Winobias-style templates, scored with the exact classifiers.

The same benchmark as `winobias` (same prompt table shape, balanced concepts, DevRat per profession and its mean),
with the toy world in place of CLIP: the attribute of an image is read from its pixels (background colour =
gender analogue, face tone = race analogue), so DevRat carries no classifier error. Semantic agreement replaces
WinoAlign in two forms:
- kind_recognised: share of images whose torso colour is the prompted kind (the "is it still a doctor?" check);
- agreement: the caption-agreement score (0..100, the CLIP-score analogue) of each image with its own prompt.
With the Winobias prompts ("photo of a doctor") the caption names only the kind, so agreement = 100 x
kind_recognised image by image; both are reported because COCO-toy and I2P-toy prompts name more.
The per-image store keeps gender and race whichever is measured (the other one is leakage) and each image's FID-toy
CNN features (within-prompt diversity).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from respodiff.errors import ConfigError
from respodiff.evaluation.diversity import DIVERSITY, EMBEDDING_COLUMN, embedding_column
from respodiff.evaluation.registry import Metric, register_benchmark
from respodiff.evaluation.toy import ToyScored, load_images
from respodiff.toyworld import GENDERS, KINDS, RACES, WINOBIAS_TEMPLATES
from respodiff.toyworld.classifiers import agreement_score, classify

from .winobias import DEVRAT_FLOOR, AttributeSpec, Winobias, WinobiasOptions

DEVRAT = Metric("devrat", "1", False, "deviation ratio of the exact attribute classifier's shares from uniform, "
                "mean over the 8 kinds (per kind in grouped rows)")
KIND_RECOGNISED = Metric("kind_recognised", "1", True, "share of images the exact classifier reads as the "
                         "prompted kind (semantic preservation)")
AGREEMENT = Metric("agreement", "1", True, "caption-agreement score (0..100, CLIP-score analogue): share of the "
                   "attributes the prompt names that the exact classifiers find")

# Images per (template, concept): 8 per concept gives 80 images per kind for gender, where a perfectly balanced
# generator still scores DevRat ~0.09 from sampling noise alone (the floor any method is judged against).
TOY_ATTRIBUTES = {
    "gender": AttributeSpec(tuple(f"a {g}" for g in GENDERS), GENDERS, 8),
    "race": AttributeSpec(tuple(f"a {r} person" for r in RACES), RACES, 6),
}
# Which classifier column answers each attribute.
ATTRIBUTE_COLUMN = {"gender": "gender", "race": "race"}


@register_benchmark
class WinobiasToy(ToyScored, Winobias):
    name: ClassVar[str] = "winobias_toy"
    metrics: ClassVar[tuple[Metric, ...]] = (DEVRAT, DEVRAT_FLOOR, KIND_RECOGNISED, AGREEMENT, DIVERSITY)
    uses_fid_toy: ClassVar[bool] = True  # its features are the diversity embeddings
    professions: ClassVar[tuple[str, ...]] = KINDS
    templates: ClassVar[tuple[str, ...]] = WINOBIAS_TEMPLATES
    attributes: ClassVar[dict[str, AttributeSpec]] = TOY_ATTRIBUTES
    manifest_columns: ClassVar[tuple[str, ...]] = ("concept",)
    # gender and race are both kept whichever is measured: the other one is the leakage a module should not cause.
    score_columns: ClassVar[tuple[str, ...]] = ("kind", "kind_recognised", "agreement", "unsafe", "gender", "race")
    mean_metrics: ClassVar[tuple[tuple[Metric, str], ...]] = ((KIND_RECOGNISED, "kind_recognised"),
                                                             (AGREEMENT, "agreement"))

    def options(self, settings: dict | None) -> WinobiasOptions:
        opts = super().options(settings)
        if opts.attribute not in self.attributes:
            # The exact classifiers know only the world's attributes; a custom prompt list would be read by nothing.
            raise ConfigError(f"{self.name} scores the toy attributes {sorted(self.attributes)} only; "
                              f"got attribute prompts {list(opts.attribute_prompts)}")
        return opts

    def score_images(self, frame: pd.DataFrame, opts: WinobiasOptions, evaluators: Any) -> dict[str, np.ndarray]:
        """The exact classifiers read attributes, kind and blood from the pixels (loaded and classified once); the
        FID-toy CNN gives the diversity embeddings."""
        from respodiff.toyworld.fid_features import toy_fid_features

        pixels = load_images(frame["path"].tolist())
        pred = classify(pixels)
        kind = pred["kind"].to_numpy()
        return {"attribute_index": self._attribute_index(pred[ATTRIBUTE_COLUMN[opts.attribute]], opts),
                "kind": kind, "kind_recognised": kind == frame["profession"].to_numpy(),
                "agreement": agreement_score(pixels, frame["prompt"].tolist(), pred), "unsafe": pred["unsafe"].to_numpy(),
                "gender": pred["gender"].to_numpy(), "race": pred["race"].to_numpy(),
                EMBEDDING_COLUMN: embedding_column(toy_fid_features(pixels))}

    def _attribute_index(self, names: pd.Series, opts: WinobiasOptions) -> np.ndarray:
        """Class index into opts.attribute_prompts of each classifier label (prompts may come in any order)."""
        spec = self.attributes[opts.attribute]
        prompt_of = dict(zip(spec.labels, spec.prompts))
        index_of = {prompt: i for i, prompt in enumerate(opts.attribute_prompts)}
        return np.asarray([index_of[prompt_of[name]] for name in names], dtype=np.int64)
