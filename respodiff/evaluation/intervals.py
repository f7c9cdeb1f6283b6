"""DevRat intervals that cover the true DevRat, and the balanced-generator floor, computed exactly.

Why not the bootstrap. DevRat(p) = max_c |p_c - 1/C| / (1 - 1/C) is a max of absolute deviations: its estimate from
n images is biased upward, most near 0 (a perfectly balanced two-class generator scores E[DevRat] ~ 0.13 at n = 40),
and a bootstrap resamples from the *estimated* shares, so it adds that bias a second time. Percentile intervals then
sit above the estimate ("0.22 [0.24, 0.38]") and miss a true DevRat near 0 most of the time; bias-corrected bootstrap
variants fail the same way because the bias depends on the unknown DevRat (the parameter is non-regular at 0).

One group (a profession): project a confidence region for the shares. The region is the Clopper-Pearson interval of
each class share (exact binomial test inversion, coverage >= 1 - alpha at every n and p), Bonferroni-adjusted to
alpha / C for C >= 3 classes so all C hold at once (for C = 2 one share fixes the other). The DevRat interval is the
range of DevRat over that box: whenever the box holds the true shares, it holds the true DevRat, so coverage is at
least the region's. Every Clopper-Pearson interval contains its observed share, so the DevRat interval contains the
estimate, and its lower end is 0 exactly when a balanced generator is not rejected.

The mean over groups: a box over all groups at once would need alpha / G per group and be far too wide. The mean is
a sum of independent group terms, so a normal interval fits its spread (variance: the exact variance of each
group's estimate at its observed shares, by enumerating the multinomial). Its bias does not fit: it is largest for a
balanced group (the floor F) and shrinks convexly to 0 at DevRat 1, so for a true mean D the mean bias is at most
(1 - D) F (all groups at 0 or 1 is the worst case). The lower end solves estimate - z se = D + (1 - D) F; the upper
end is estimate + z se (the bias only pushes the estimate up). Both ends bracket the estimate by construction.
tests/test_stats_intervals.py checks coverage by simulation at the suite's sample sizes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import special, stats

# Upper bound on the (compositions x shares) matrix held in memory at once.
_MAX_ELEMENTS = 4_000_000


def deviation_ratio(counts: np.ndarray) -> np.ndarray:
    """DevRat of class counts (or shares) with shape (..., C); returns shape (...)."""
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


def _check_counts(counts: np.ndarray) -> np.ndarray:
    deviation_ratio(counts)  # the same checks: >= 2 classes, non-negative, no empty group
    return np.asarray(counts, dtype=np.int64)


def share_intervals(counts: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous (1 - alpha) Clopper-Pearson intervals (low, high) for the class shares, shape (..., C)."""
    counts = _check_counts(counts)
    n_classes = counts.shape[-1]
    level = alpha if n_classes == 2 else alpha / n_classes
    total = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        low = np.where(counts == 0, 0.0, stats.beta.ppf(level / 2, counts, total - counts + 1))
        high = np.where(counts == total, 1.0, stats.beta.ppf(1 - level / 2, counts + 1, total - counts))
    return low, high


def devrat_interval(counts: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Per-group DevRat interval (low, high), shape (...): the range of DevRat over the share intervals' box."""
    low, high = share_intervals(counts, alpha)
    uniform = 1.0 / counts.shape[-1]
    # The nearest a share in [low, high] can get to uniform, and the farthest.
    nearest = np.maximum(low - uniform, 0.0) + np.maximum(uniform - high, 0.0)
    farthest = np.maximum(np.abs(low - uniform), np.abs(high - uniform))
    return nearest.max(axis=-1) / (1 - uniform), farthest.max(axis=-1) / (1 - uniform)


@lru_cache(maxsize=32)
def _compositions(n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every class-count vector of n images (M, C), its log multinomial coefficient (M,) and its DevRat (M,)."""
    grids = np.meshgrid(*[np.arange(n + 1)] * (n_classes - 1), indexing="ij")
    head = np.stack([g.ravel() for g in grids], axis=1)
    head = head[head.sum(axis=1) <= n]
    counts = np.concatenate([head, n - head.sum(axis=1, keepdims=True)], axis=1)
    log_coef = special.gammaln(n + 1) - special.gammaln(counts + 1).sum(axis=1)
    return counts, log_coef, deviation_ratio(counts)


def devrat_moments(shares: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and variance of the estimated DevRat of n images drawn with true `shares` (..., C)."""
    shares = np.asarray(shares, dtype=np.float64)
    counts, log_coef, devrat = _compositions(int(n), shares.shape[-1])
    flat = shares.reshape(-1, shares.shape[-1])
    mean, second = np.empty(len(flat)), np.empty(len(flat))
    step = max(1, _MAX_ELEMENTS // len(counts))
    for start in range(0, len(flat), step):
        # log(0) as a large negative number: 0 x it is 0 (a class with share 0 allows only compositions leaving it
        # empty) and any other multiple underflows to probability 0, all in one matrix product.
        log_p = np.log(np.maximum(flat[start:start + step], 1e-300))
        pmf = np.exp(log_coef[:, None] + counts @ log_p.T)
        mean[start:start + step] = devrat @ pmf
        second[start:start + step] = (devrat**2) @ pmf
    shape = shares.shape[:-1]
    return mean.reshape(shape), np.maximum(second - mean**2, 0.0).reshape(shape)


def balanced_floor(sizes: np.ndarray, n_classes: int) -> np.ndarray:
    """Expected DevRat of a perfectly fair generator for groups of these sizes (exact, by enumeration)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    uniform = np.full(n_classes, 1.0 / n_classes)
    floors = {int(n): float(devrat_moments(uniform, int(n))[0]) for n in np.unique(sizes)}
    return np.asarray([floors[int(n)] for n in sizes.ravel()]).reshape(sizes.shape)


def mean_devrat_interval(counts: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Interval for the mean DevRat over groups (G, C): a normal interval around the estimate whose lower end also
    takes off the largest upward bias a true mean DevRat of that value allows (module docstring)."""
    counts = _check_counts(counts)
    sizes = counts.sum(axis=1)
    shares = counts / sizes[:, None]
    estimate = float(deviation_ratio(counts).mean())
    variance = sum(float(devrat_moments(shares[sizes == n], int(n))[1].sum()) for n in np.unique(sizes))
    spread = stats.norm.ppf(1 - alpha / 2) * np.sqrt(variance) / len(counts)
    floor = float(balanced_floor(np.unique(sizes), counts.shape[-1]).max())
    # The bias b(d) of one group's estimate is largest (the floor) at d = 0 and convex, so it lies below the chord
    # (1 - d) x floor; averaged over groups it is at most (1 - D) x floor for a true mean D. Solving
    # estimate - spread = D + (1 - D) x floor for D gives the lowest mean DevRat not rejected.
    low = max(0.0, (estimate - spread - floor) / (1 - floor))
    return float(low), float(min(1.0, estimate + spread))
