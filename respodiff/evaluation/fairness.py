"""Deviation ratio (DevRat): how far a group's predicted attribute distribution is from uniform.

DevRat(group) = max over classes c of |N_c / N - 1/C| / (1 - 1/C). It is 0 for a perfectly balanced group and 1
when every image falls in one class. Classes nobody was assigned to count too (their |0 - 1/C| term matters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from respodiff.evaluation.stats import DEFAULT_ALPHA, DEFAULT_N_BOOTSTRAP, percentile_interval, rng_for


def deviation_ratio(counts: np.ndarray) -> np.ndarray:
    """DevRat of class counts with shape (..., C); returns shape (...)."""
    counts = np.asarray(counts, dtype=np.float64)
    n_classes = counts.shape[-1]
    if n_classes < 2:
        raise ValueError(f"DevRat needs at least 2 classes, got {n_classes}")
    if (counts < 0).any():
        raise ValueError("class counts must be non-negative")
    totals = counts.sum(axis=-1, keepdims=True)
    if (totals == 0).any():
        raise ValueError("DevRat of a group without images is undefined")
    uniform = 1.0 / n_classes
    return np.abs(counts / totals - uniform).max(axis=-1) / (1.0 - uniform)


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    return np.bincount(labels.astype(np.int64), minlength=n_classes)


@dataclass
class DevRatSummary:
    """DevRat per group and their mean, each with a bootstrap interval (None when not bootstrapped)."""

    groups: list[str]
    counts: np.ndarray  # (G, C)
    per_group: np.ndarray  # (G,)
    per_group_ci: list[tuple[float, float] | None]
    mean: float
    mean_ci: tuple[float, float] | None


def devrat_by_group(
    labels: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    n_classes: int,
    *,
    n_boot: int = DEFAULT_N_BOOTSTRAP,
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
) -> DevRatSummary:
    """DevRat of each group (e.g. profession) and the mean over groups.

    The bootstrap resamples images within each group, which keeps every group's size fixed. Resampling n images
    with replacement from a group makes its class counts Multinomial(n, observed shares), so we draw the counts
    directly instead of materialising index matrices.

    Intervals are percentile intervals. DevRat is a max of absolute deviations, so finite samples bias it upward
    (a perfectly balanced generator with 150 images per profession scores about 0.065 for two classes) and the
    bootstrap inherits that bias: near 0 the interval can sit entirely above the point estimate.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups, dtype=object)
    if labels.shape != groups.shape:
        raise ValueError(f"labels {labels.shape} and groups {groups.shape} must align one to one")
    names = sorted(set(groups.tolist()))
    if not names:
        raise ValueError("DevRat needs at least one image")
    counts = np.stack([class_counts(labels[groups == name], n_classes) for name in names])
    per_group = deviation_ratio(counts)
    if n_boot <= 0:
        return DevRatSummary(names, counts, per_group, [None] * len(names), float(per_group.mean()), None)
    resampled = np.empty((len(names), n_boot))
    for i, name in enumerate(names):
        total = int(counts[i].sum())
        draws = rng_for(seed, "devrat", name).multinomial(total, counts[i] / total, size=n_boot)
        resampled[i] = deviation_ratio(draws)
    return DevRatSummary(
        groups=names,
        counts=counts,
        per_group=per_group,
        per_group_ci=[percentile_interval(row, alpha) for row in resampled],
        mean=float(per_group.mean()),
        mean_ci=percentile_interval(resampled.mean(axis=0), alpha),
    )


def zero_shot_labels(image_embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """Index of the class prompt with the highest cosine per image.

    CLIP's zero-shot probabilities are a softmax over (logit scale x cosine); the argmax does not depend on the scale.
    """
    images = np.asarray(image_embeddings, dtype=np.float64)
    classes = np.asarray(class_embeddings, dtype=np.float64)
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    classes = classes / np.linalg.norm(classes, axis=1, keepdims=True)
    return (images @ classes.T).argmax(axis=1)
