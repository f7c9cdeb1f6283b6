"""Deviation ratio (DevRat): how far a group's predicted attribute distribution is from uniform.

DevRat(group) = max over classes c of |N_c / N - 1/C| / (1 - 1/C). It is 0 for a perfectly balanced group and 1
when every image falls in one class. Classes nobody was assigned to count too (their |0 - 1/C| term matters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from respodiff.evaluation.intervals import (
    balanced_floor,
    deviation_ratio,
    devrat_interval,
    mean_devrat_interval,
)
from respodiff.evaluation.stats import DEFAULT_ALPHA

__all__ = ["DevRatSummary", "class_counts", "deviation_ratio", "devrat_by_group", "zero_shot_labels"]


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    return np.bincount(labels.astype(np.int64), minlength=n_classes)


@dataclass
class DevRatSummary:
    """DevRat per group and their mean, each with its interval (None when not asked for) and the balanced-generator
    floor: the DevRat a perfectly fair generator is expected to score with the same number of images."""

    groups: list[str]
    counts: np.ndarray  # (G, C)
    per_group: np.ndarray  # (G,)
    per_group_ci: list[tuple[float, float] | None]
    mean: float
    mean_ci: tuple[float, float] | None
    per_group_floor: np.ndarray  # (G,)
    floor: float


def devrat_by_group(
    labels: np.ndarray,
    groups: Sequence[str] | np.ndarray,
    n_classes: int,
    *,
    intervals: bool = True,
    alpha: float = DEFAULT_ALPHA,
) -> DevRatSummary:
    """DevRat of each group (e.g. profession), the mean over groups, their intervals and floors.

    Intervals come from respodiff/evaluation/intervals.py (share-region projection per group, a bias-bounded normal
    interval for the mean), not a bootstrap: DevRat's upward bias near 0 put bootstrap intervals above the estimate.
    They need no random numbers, so they are the same on every run.
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
    floors = balanced_floor(counts.sum(axis=1), n_classes)
    per_group_ci: list[tuple[float, float] | None] = [None] * len(names)
    mean_ci = None
    if intervals:
        low, high = devrat_interval(counts, alpha)
        per_group_ci = [(float(lo), float(hi)) for lo, hi in zip(low, high)]
        mean_ci = mean_devrat_interval(counts, alpha)
    return DevRatSummary(names, counts, per_group, per_group_ci, float(per_group.mean()), mean_ci, floors,
                         float(floors.mean()))


def zero_shot_labels(image_embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """Index of the class prompt with the highest cosine per image.

    CLIP's zero-shot probabilities are a softmax over (logit scale x cosine); the argmax does not depend on the scale.
    """
    images = np.asarray(image_embeddings, dtype=np.float64)
    classes = np.asarray(class_embeddings, dtype=np.float64)
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    classes = classes / np.linalg.norm(classes, axis=1, keepdims=True)
    return (images @ classes.T).argmax(axis=1)
