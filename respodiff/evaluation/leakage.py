"""What a module changes besides its target (leakage), read from the attributes of every image.

Fairness benchmarks (Winobias, Winobias-toy) keep, per image, the attributes a module is not meant to change beside
the one it targets; COCO-style caption benchmarks keep gender and race per image with two facts about the caption:
whether it names the attribute (such captions are left out: the prompt, not the module, decides them there) and its
`subject`, the group within which the base model's and a method's distributions are compared:
- toy scale (coco_toy): the exact classifiers read gender and race; subject = the kind the caption names, else
  "person" (every toy caption shows a person);
- paper scale (coco30k, when asked): CLIP zero-shot with the Winobias attribute prompts; subject = "person" when the
  caption mentions a person (one pooled group), else "" (no person: left out, a zero-shot gender of a plate of food
  means nothing). Race words include colour words ("a man in a black shirt"): such captions are left out of race
  leakage rather than risk a caption that steers the reading.
`respodiff/evaluation/compare.py` turns them into leakage_tv rows against the base model (paired.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from respodiff.evaluation.fairness import zero_shot_labels


@dataclass(frozen=True)
class ZeroShotAttribute:
    """An attribute CLIP reads zero-shot: one prompt per class, and the class labels stored per image."""

    prompts: tuple[str, ...]
    labels: tuple[str, ...]


# The paper's Winobias attribute prompts (benchmarks/winobias.py builds its attributes from these).
ZERO_SHOT_ATTRIBUTES = {
    "gender": ZeroShotAttribute(("a man", "a woman"), ("man", "woman")),
    "race": ZeroShotAttribute(("a white person", "a black person", "an asian person"), ("white", "black", "asian")),
}
# Per-image columns of a caption benchmark that measures leakage.
SUBJECT = "subject"
LEAKAGE_COLUMNS = ("gender", "race", "names_gender", "names_race", SUBJECT)

_GENDER_WORDS = frozenset("""
    man men woman women boy boys girl girls male males female females lady ladies gentleman gentlemen guy guys he she
    him his her hers husband wife mother father mom dad son sons daughter daughters brother brothers sister sisters
    king queen bride groom grandmother grandfather grandma grandpa aunt uncle girlfriend boyfriend businessman
    businessmen businesswoman policeman policemen policewoman fireman firemen waitress actress cowboy cowgirl
    sportsman""".split())
_RACE_WORDS = frozenset("""
    white black asian asians african africans caucasian hispanic latino latina indian chinese japanese korean arab
    arabic""".split())
_PERSON_WORDS = frozenset("""
    person persons people child children kid kids baby babies toddler teenager teenagers adult adults player players
    skier skiers surfer surfers skateboarder skateboarders snowboarder snowboarders rider riders someone tourist
    tourists pedestrian pedestrians athlete athletes batter pitcher catcher umpire crowd spectators student students
    worker workers officer officers chef cook passenger passengers individual human humans family couple friends
    team""".split()) | _GENDER_WORDS


def caption_words(caption: str) -> set[str]:
    return set(re.findall(r"[a-z]+", caption.lower()))


def caption_facts(captions: Sequence[str]) -> dict[str, np.ndarray]:
    """names_gender, names_race and subject ("person" or "") of each paper-scale caption."""
    words = [caption_words(c) for c in captions]
    return {"names_gender": np.asarray([bool(w & _GENDER_WORDS) for w in words]),
            "names_race": np.asarray([bool(w & _RACE_WORDS) for w in words]),
            SUBJECT: np.asarray(["person" if w & _PERSON_WORDS else "" for w in words], dtype=object)}


def zero_shot_columns(clip: Any, paths: Sequence[str], attributes: Mapping[str, ZeroShotAttribute]
                      ) -> dict[str, np.ndarray]:
    """One label column per attribute (CLIP zero-shot argmax over its prompts); the image embeddings are computed
    once (ClipScorer keeps the last call's), the text embeddings once per attribute."""
    images = clip.image_embeddings(paths)
    out = {}
    for name, attribute in attributes.items():
        index = zero_shot_labels(images, clip.text_embeddings(list(attribute.prompts)))
        out[name] = np.asarray(attribute.labels, dtype=object)[index]
    return out


def caption_attribute_columns(clip: Any, paths: Sequence[str], captions: Sequence[str]) -> dict[str, np.ndarray]:
    """The leakage columns (LEAKAGE_COLUMNS) of a paper-scale caption benchmark such as coco30k: gender and race by
    CLIP zero-shot, and the caption facts. With the same `paths` as a CLIP-score call just before, no image is
    encoded again."""
    if len(paths) != len(captions):
        raise ValueError(f"{len(paths)} images but {len(captions)} captions")
    return {**zero_shot_columns(clip, paths, ZERO_SHOT_ATTRIBUTES), **caption_facts(captions)}


def attribute_classes(benchmark: Any) -> dict[str, tuple[str, ...]]:
    """The class labels of each attribute a benchmark stores per image (the paper's zero-shot labels unless the
    benchmark declares its own, as the toy ones do)."""
    declared = getattr(benchmark, "leakage_attributes", None)
    if declared:
        return {name: tuple(labels) for name, labels in declared.items()}
    return {name: attribute.labels for name, attribute in ZERO_SHOT_ATTRIBUTES.items()}


def target_attribute(config: Mapping[str, Any] | None, classes: Mapping[str, Sequence[str]]) -> str | None:
    """The attribute a run's concepts set (their names are that attribute's labels: man/woman, pale/tan/dark), or
    None (safety concepts, or no config): every attribute is then one the module should leave alone."""
    concepts = (config or {}).get("concepts") or {}
    names = set((concepts.get("items") or {}).keys())
    for attribute, labels in classes.items():
        if names and names == set(labels):
            return attribute
    return None
