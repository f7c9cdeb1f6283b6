"""Paired comparisons of a method with the base model, and what else a module changes (leakage).

Every method samples the same prompts with the same image seeds (image ids are equal across runs), so a difference
between a method and the base model is best judged image by image: the paired bootstrap resamples images (or
prompts) once and recomputes the statistic on both runs with the same draw, which cancels the variation both share.

Winobias(-toy): images are resampled within each profession (its size stays fixed, as DevRat needs); I2P(-toy):
whole prompts are resampled (a prompt's images are not independent); caption benchmarks (one image per caption):
captions, within each caption subject for leakage; diversity: prompts. Rows written (compare.py), each with a 95%
basic bootstrap interval (`interval`) widened to contain its estimate:
- <metric>_diff: method minus base for DevRat, the safety rate, agreement / CLIP score, kind recognised, diversity;
- leakage_tv (lower is better): per group (profession; caption subject), the total-variation distance between the
  method's and the base model's distribution of an attribute the module is not meant to change, averaged over
  groups; leakage_devrat_diff (Winobias): that attribute's DevRat, method minus base. Both carry
  {"attribute": name} as group.
TV distance, like DevRat, is biased upward by sampling noise: two identical generators score above 0 (the
`leakage_tv_floor` row: the expected TV between two independent draws from the base model's own shares).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from respodiff.evaluation.intervals import deviation_ratio
from respodiff.evaluation.stats import DEFAULT_ALPHA, percentile_interval, rng_for


def bootstrap_weights(units: np.ndarray, strata: np.ndarray | None, n_boot: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(n_boot + 1, N) image weights: row 0 all ones (the estimate), then resamples of whole `units` with
    replacement, within each stratum when `strata` is given (so every stratum keeps its number of units)."""
    unit_ids, unit_of = np.unique(np.asarray(units, dtype=str), return_inverse=True)
    unit_stratum = np.zeros(len(unit_ids), dtype=np.int64)
    if strata is not None:
        _, stratum_of = np.unique(np.asarray(strata, dtype=str), return_inverse=True)
        unit_stratum[unit_of] = stratum_of
    unit_weights = np.zeros((n_boot, len(unit_ids)))
    for stratum in np.unique(unit_stratum):
        members = np.flatnonzero(unit_stratum == stratum)
        unit_weights[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), n_boot)
    return np.vstack([np.ones(len(unit_of)), unit_weights[:, unit_of]])


def weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    return weights @ np.asarray(values, dtype=np.float64) / weights.sum(axis=1)


def _shares(weights: np.ndarray, labels: np.ndarray, groups: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """(B, G, C) weighted class shares per group (groups in sorted order)."""
    names = sorted(set(groups.tolist()))
    onehot = np.zeros((len(labels), len(names) * len(classes)))
    group_index = {g: i for i, g in enumerate(names)}
    class_index = {c: i for i, c in enumerate(classes)}
    for row, (g, c) in enumerate(zip(groups, labels)):
        onehot[row, group_index[g] * len(classes) + class_index[c]] = 1.0
    counts = (weights @ onehot).reshape(len(weights), len(names), len(classes))
    return counts / counts.sum(axis=2, keepdims=True)


def weighted_devrat(weights: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                    classes: Sequence[str]) -> np.ndarray:
    return deviation_ratio(_shares(weights, labels, groups, classes)).mean(axis=1)


def weighted_tv(weights: np.ndarray, base: np.ndarray, method: np.ndarray, groups: np.ndarray,
                classes: Sequence[str]) -> np.ndarray:
    """Mean over groups of the total-variation distance between the two runs' class shares."""
    gap = _shares(weights, method, groups, classes) - _shares(weights, base, groups, classes)
    return 0.5 * np.abs(gap).sum(axis=2).mean(axis=1)


def tv_floor(base: np.ndarray, groups: np.ndarray, classes: Sequence[str], rng: np.random.Generator,
             draws: int = 2000) -> float:
    """Expected TV between two independent samples of the base model's own per-group shares (Monte Carlo)."""
    shares = _shares(np.ones((1, len(base))), base, groups, classes)[0]
    sizes = pd.Series(groups).value_counts().sort_index().to_numpy()
    total = 0.0
    for share, n in zip(shares, sizes):
        first = rng.multinomial(n, share, size=draws) / n
        second = rng.multinomial(n, share, size=draws) / n
        total += 0.5 * np.abs(first - second).sum(axis=1).mean()
    return total / len(shares)


def interval(samples: np.ndarray, alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    """Basic (reverse-percentile) bootstrap interval [2 est - q_hi, 2 est - q_lo] (row 0 is the estimate), widened
    to contain the estimate. DevRat and TV are biased upward near 0 and a resample adds that bias again; the
    percentile interval would shift the same way, the basic interval subtracts the shift instead."""
    estimate = float(samples[0])
    low, high = percentile_interval(samples[1:], alpha)
    return min(2 * estimate - high, estimate), max(2 * estimate - low, estimate)


def join_runs(base: pd.DataFrame, method: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The two per-image stores side by side by image id (`<column>_base`, `<column>_method`); both runs must hold
    the same images, or the comparison would not be paired."""
    missing = set(base["image_id"]) ^ set(method["image_id"])
    if missing:
        raise ValueError(f"the runs do not hold the same images ({len(missing)} ids in one only, e.g. "
                         f"{sorted(missing)[0]!r}); a paired comparison needs the same prompts and image seeds")
    keep = ["image_id", *columns]
    return base[keep].merge(method[keep], on="image_id", suffixes=("_base", "_method"), validate="one_to_one")


def seeded(seed: int, *key: object) -> np.random.Generator:
    return rng_for(seed, "paired", *key)
