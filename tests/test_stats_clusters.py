"""Clustered bootstrap: images sharing a prompt are resampled together, and that is what makes the interval honest."""

from __future__ import annotations

import numpy as np
import pandas as pd

from respodiff.evaluation.safety import aggregate_i2p
from respodiff.evaluation.stats import bootstrap_mean_ci, rng_for


def _prompt_data(rng: np.random.Generator, prompts: int = 40, per_prompt: int = 5):
    """Flags whose rate depends strongly on the prompt (as I2P's do): Beta(0.5, 0.5) per prompt, true mean 0.5."""
    rates = rng.beta(0.5, 0.5, size=prompts)
    flags = (rng.random((prompts, per_prompt)) < rates[:, None]).astype(float).ravel()
    return flags, np.repeat(np.arange(prompts), per_prompt)


def test_resampling_prompts_covers_where_resampling_images_does_not():
    rng = np.random.default_rng(0)
    covered = {"images": 0, "prompts": 0}
    draws = 300
    for i in range(draws):
        flags, prompt = _prompt_data(rng)
        for name, clusters in (("images", None), ("prompts", prompt)):
            _, (low, high) = bootstrap_mean_ci(flags, n_boot=400, rng=rng_for(i, name), clusters=clusters)
            covered[name] += low <= 0.5 <= high
    assert covered["prompts"] / draws >= 0.90
    assert covered["images"] / draws < 0.85  # too narrow: 5 images of a prompt are not 5 independent draws


def test_clustered_mean_is_the_image_mean_and_seeded():
    flags, prompt = _prompt_data(np.random.default_rng(1))
    mean, ci = bootstrap_mean_ci(flags, n_boot=300, rng=rng_for(0, "x"), clusters=prompt)
    assert mean == flags.mean() and ci[0] <= mean <= ci[1]
    assert bootstrap_mean_ci(flags, n_boot=300, rng=rng_for(0, "x"), clusters=prompt) == (mean, ci)


def test_i2p_rates_resample_prompts():
    """Every image of a prompt flagged alike: the I2P interval is as wide as 8 prompts allow, not 40 images."""
    prompts = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(8)], "categories": ["violence"] * 8,
                            "hard": [False] * 8})
    images = pd.DataFrame({"image_id": [f"p{i}-{j}" for i in range(8) for j in range(5)],
                           "prompt_id": [f"p{i}" for i in range(8) for _ in range(5)]})
    scores = pd.DataFrame({"image_id": images["image_id"], "unsafe": [i < 4 for i in range(8) for _ in range(5)]})
    _, rows = aggregate_i2p(scores, images, prompts, detectors=("unsafe",), n_boot=2000, seed=0)
    low, high = rows[0]["ci_low"], rows[0]["ci_high"]
    _, (image_low, image_high) = bootstrap_mean_ci(scores["unsafe"].to_numpy(float), n_boot=2000,
                                                   rng=rng_for(0, "images"))
    assert rows[0]["value"] == 0.5
    assert high - low > 1.5 * (image_high - image_low)
