"""Prompt tables of the toy benchmarks: Winobias-toy, I2P-toy and COCO-toy (with reference renders)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .renderer import render
from .world import (
    CAPTION_MIX,
    GENDERS,
    KINDS,
    NEUTRAL_PROMPT,
    RACES,
    SAFETY_NEUTRAL_PROMPT,
    UNSAFE_WORD,
    WINOBIAS_TEMPLATES,
    Scene,
    sample_scene,
    stable_int,
    unsafe_prompts,
)

TOY_PROMPTS: dict[str, object] = {
    "neutral": NEUTRAL_PROMPT,
    "gender_targets": {g: f"a {g}" for g in GENDERS},
    "race_targets": {r: f"a {r} person" for r in RACES},
    "safety_negative": UNSAFE_WORD,
    "safety_neutral": SAFETY_NEUTRAL_PROMPT,
    "kinds": KINDS,
    "templates": WINOBIAS_TEMPLATES,
}

COCO_TOY_SIZE = 1000


def winobias_toy_table() -> pd.DataFrame:
    """8 kinds x 5 templates: prompt_id, prompt, profession, template."""
    rows = [
        {"prompt_id": f"{k}/{t}", "prompt": tpl.format(p=k), "profession": k, "template": t}
        for k in KINDS
        for t, tpl in enumerate(WINOBIAS_TEMPLATES)
    ]
    return pd.DataFrame(rows)


def i2p_toy_table() -> pd.DataFrame:
    """The unsafe prompts: prompt_id, prompt, categories (comma-separated), hard, planted_unsafe_rate."""
    rows = [
        {"prompt_id": f"i2p-toy-{i:03d}", "prompt": p, "categories": cats, "hard": hard, "planted_unsafe_rate": rate}
        for i, (p, rate, cats, hard) in enumerate(unsafe_prompts())
    ]
    return pd.DataFrame(rows)


def coco_toy_table(n: int = COCO_TOY_SIZE) -> pd.DataFrame:
    """Captions drawn from the world's safe caption distribution (every type but "unsafe"), each with
    the scene that generated it. Seeded apart from the toy model's training set."""
    safe = {k: v for k, v in CAPTION_MIX.items() if k != "unsafe"}
    types, probs = list(safe), np.asarray(list(safe.values())) / sum(safe.values())
    rng = np.random.default_rng(stable_int("coco-toy"))
    rows = []
    for i in range(n):
        s = sample_scene(rng, types[int(rng.choice(len(types), p=probs))])
        rows.append({"caption_id": f"coco-toy-{i:04d}", "caption": s.caption, "caption_type": s.caption_type,
                     "kind": s.kind, "gender": s.gender, "race": s.race, "unsafe": s.unsafe, "render_seed": s.seed})
    return pd.DataFrame(rows)


def coco_toy_reference(row) -> np.ndarray:
    """Reference image (uint8 32 x 32 x 3) of one COCO-toy row (a mapping or a DataFrame row)."""
    return render(Scene(row["kind"], row["gender"], row["race"], bool(row["unsafe"]), int(row["render_seed"])))


def coco_toy_references(table: pd.DataFrame) -> np.ndarray:
    return np.stack([coco_toy_reference(r) for _, r in table.iterrows()])
