"""Bootstrap confidence intervals over images or clusters of images: seeded, vectorised, no loop over resamples.

Images that share a prompt (I2P's 5 per prompt, Winobias' per profession) are not independent draws: resampling them
one by one treats them as if they were and gives intervals that are too narrow. With `clusters` the bootstrap
resamples whole clusters (prompts, professions) and recomputes the image-weighted mean.
"""

from __future__ import annotations

import numpy as np

from respodiff.seeding import stable_seed

DEFAULT_N_BOOTSTRAP = 1000
DEFAULT_ALPHA = 0.05
# Upper bound on resample indices held in memory at once (int64: 8 bytes each).
_MAX_BATCH_ELEMENTS = 4_000_000


def rng_for(seed: int, *key: object) -> np.random.Generator:
    """An independent, reproducible stream per metric row, so adding a row never shifts another row's interval."""
    return np.random.default_rng(stable_seed("bootstrap", seed, *key))


def percentile_interval(samples: np.ndarray, alpha: float = DEFAULT_ALPHA) -> tuple[float, float]:
    low, high = np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator,
                    clusters: np.ndarray | None = None) -> np.ndarray:
    """`n_boot` means of `values` resampled with replacement: images, or whole clusters (one label per value)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n == 0:
        raise ValueError("cannot bootstrap an empty set of values")
    if clusters is not None:
        return _cluster_means(values, np.asarray(clusters, dtype=object), n_boot, rng)
    if np.isin(values, (0.0, 1.0)).all():
        # For 0/1 values the resampled count of ones is Binomial(n, mean): the same distribution, no index matrix.
        return rng.binomial(n, values.mean(), size=n_boot) / n
    out = np.empty(n_boot)
    step = max(1, _MAX_BATCH_ELEMENTS // n)
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def _cluster_means(values: np.ndarray, clusters: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Resample K clusters with replacement: cluster k is drawn W_k times, W ~ Multinomial(K, 1/K), and the mean is
    sum_k W_k S_k / sum_k W_k N_k (S_k, N_k: its values' sum and count), with no index matrix."""
    if clusters.shape != values.shape:
        raise ValueError(f"clusters {clusters.shape} and values {values.shape} must align one to one")
    _, member = np.unique(clusters.astype(str), return_inverse=True)
    sums = np.bincount(member, weights=values)
    sizes = np.bincount(member).astype(np.float64)
    draws = rng.multinomial(len(sums), np.full(len(sums), 1.0 / len(sums)), size=n_boot)
    return (draws @ sums) / (draws @ sizes)


def bootstrap_mean_ci(
    values: np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOTSTRAP,
    rng: np.random.Generator | None = None,
    alpha: float = DEFAULT_ALPHA,
    clusters: np.ndarray | None = None,
) -> tuple[float, tuple[float, float] | None]:
    """(mean, (low, high)) with a percentile bootstrap interval over images or `clusters`; none when n_boot is 0.

    The percentile interval of a mean contains the mean except in pathological draws; it is widened to contain it
    so that no table prints an interval excluding its own estimate.
    """
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if n_boot <= 0:
        return mean, None
    rng = rng if rng is not None else np.random.default_rng(0)
    low, high = percentile_interval(bootstrap_means(values, n_boot, rng, clusters), alpha)
    return mean, (min(low, mean), max(high, mean))

