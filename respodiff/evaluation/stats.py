"""Bootstrap confidence intervals over images: seeded, vectorised, no Python loop over resamples."""

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


def bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """`n_boot` means of `values` resampled with replacement."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n == 0:
        raise ValueError("cannot bootstrap an empty set of values")
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


def bootstrap_mean_ci(
    values: np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOTSTRAP,
    rng: np.random.Generator | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> tuple[float, tuple[float, float] | None]:
    """(mean, (low, high)) with a percentile bootstrap interval; no interval when n_boot is 0."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if n_boot <= 0:
        return mean, None
    rng = rng if rng is not None else np.random.default_rng(0)
    return mean, percentile_interval(bootstrap_means(values, n_boot, rng), alpha)

