"""Rows repeated over training seeds: a cell is the mean +- sd over seeds, the per-seed values go to the notes.

One training seed hides a spread that results/LOG.md measured at +-0.07 DevRat on the toy, larger than most gaps
between the settings a table compares; a `seeds: [0, 1, 2]` row shows that spread instead of one draw from it.
"""

from __future__ import annotations

import statistics

from respodiff.reporting.selection import ResultRef


def seed_of(ref: ResultRef) -> int | None:
    value = ref.param("train.seed")
    return None if value is None else int(value)


def latest_per_seed(found: list[ResultRef], seeds: tuple[int, ...]) -> dict[int, ResultRef]:
    """The most recent run of each seed (`found` is sorted oldest first, as `select` returns it)."""
    chosen = {}
    for ref in found:
        seed = seed_of(ref)
        if seed in seeds:
            chosen[seed] = ref
    return dict(sorted(chosen.items()))


def summarise(values: dict[int, float]) -> tuple[float, float | None]:
    """(mean, sample sd); the sd is None for a single seed."""
    numbers = list(values.values())
    return statistics.fmean(numbers), (statistics.stdev(numbers) if len(numbers) > 1 else None)


def per_seed_note(row_label: str, col_label: str, values: dict[int, float], digits: int) -> str:
    listed = ", ".join(f"seed {seed} {value:.{digits}f}" for seed, value in values.items())
    return f"{row_label} / {col_label}: {listed}"
