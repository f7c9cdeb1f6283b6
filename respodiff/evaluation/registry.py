"""Benchmarks by name: the metric declarations, the result type and the base class every benchmark extends.

Benchmarks live one per file in the top-level `benchmarks/` package. They register themselves when their module is
imported, and `get_benchmark` imports those modules on demand, so importing respodiff stays cheap and a new
benchmark needs no edit here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

import pandas as pd

from respodiff.errors import ConfigError

BENCHMARK_PACKAGE = "benchmarks"


@dataclass(frozen=True)
class Metric:
    """A declared metric: results carry its version so a changed definition never mixes with old numbers."""

    name: str
    version: str
    higher_is_better: bool
    description: str = ""


class MetricValue(TypedDict):
    """One result row. `group` is None for the headline value, else e.g. {"profession": "doctor"}."""

    name: str
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int
    group: dict[str, str] | None
    version: str
    higher_is_better: bool


def metric_value(
    metric: Metric,
    value: float,
    *,
    n: int,
    ci: tuple[float, float] | None = None,
    group: Mapping[str, str] | None = None,
) -> MetricValue:
    """A result row for `metric`; it repeats version and direction so a row is readable on its own."""
    return MetricValue(
        name=metric.name,
        value=float(value),
        ci_low=None if ci is None else float(ci[0]),
        ci_high=None if ci is None else float(ci[1]),
        n=int(n),
        group=None if group is None else dict(group),
        version=metric.version,
        higher_is_better=metric.higher_is_better,
    )


@dataclass
class BenchmarkResult:
    """What `Benchmark.evaluate` returns: per-image scores keyed by image_id, aggregate rows, evaluator identity."""

    per_image: pd.DataFrame
    metrics: list[MetricValue]
    evaluator: dict[str, Any] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return len(self.per_image)

    def metric_rows(self, declared: tuple[Metric, ...] | None = None) -> list[dict[str, Any]]:
        """Rows for the results JSON; with `declared`, every row must name a declared metric of that version."""
        rows = [dict(row) for row in self.metrics]
        if declared is not None:
            versions = {metric.name: metric for metric in declared}
            for row in rows:
                metric = versions.get(row["name"])
                if metric is None or metric.version != row["version"]:
                    raise ConfigError(f"result row {row['name']!r} v{row['version']} is not among the declared "
                                      f"metrics {[f'{m.name} v{m.version}' for m in declared]}")
        return rows

    def metric(self, name: str, group: Mapping[str, str] | None = None) -> MetricValue:
        """The row named `name` with exactly this group (None = the headline row)."""
        wanted = None if group is None else dict(group)
        for row in self.metrics:
            if row["name"] == name and row["group"] == wanted:
                return row
        raise KeyError(f"no metric {name!r} with group {wanted}")


class Benchmark:
    """Base class. A subclass sets `name` and `metrics` and implements the four methods below.

    `settings` is a plain dict (the benchmark's section of the resolved config). `evaluators` is a
    `respodiff.evaluation.evaluators.Evaluators` (or any object with the attributes the benchmark uses).
    """

    name: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]

    def check_assets(self, settings: dict) -> None:
        """Raise MissingAssetError (naming the command to run) if data or evaluator weights are missing."""
        raise NotImplementedError

    def prompt_table(self, settings: dict) -> pd.DataFrame:
        """One row per prompt: prompt_id (str), prompt (str), plus metadata columns."""
        raise NotImplementedError

    def samples_per_prompt(self, settings: dict, n_concepts: int) -> int:
        raise NotImplementedError

    def evaluate(self, images: pd.DataFrame, settings: dict, evaluators: Any) -> BenchmarkResult:
        """Score a finished manifest (one row per image, `path` absolute)."""
        raise NotImplementedError

    def metric_by_name(self, name: str) -> Metric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(f"benchmark {self.name!r} declares no metric {name!r}")


_REGISTRY: dict[str, type[Benchmark]] = {}


def register_benchmark(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator: make `cls` available under `cls.name`. Two different classes may not share a name."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__qualname__} needs a non-empty class attribute `name` to be registered")
    if not getattr(cls, "metrics", None):
        raise ConfigError(f"benchmark {name!r} ({cls.__qualname__}) declares no metrics")
    existing = _REGISTRY.get(name)
    # The same class seen again (module re-imported, e.g. by importlib.reload) is not a conflict.
    if existing is not None and _qualified(existing) != _qualified(cls):
        raise ConfigError(
            f"benchmark name {name!r} is registered twice: by {_qualified(existing)} and by {_qualified(cls)}"
        )
    _REGISTRY[name] = cls
    return cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_benchmark_modules(only: str | None = None) -> None:
    """Import `benchmarks.<only>` if it exists, or every module of the package when `only` is None."""
    package = importlib.import_module(BENCHMARK_PACKAGE)
    modules = [info.name for info in pkgutil.iter_modules(package.__path__) if not info.ispkg]
    if only is not None:
        modules = [module for module in modules if module == only]
    for module in sorted(modules):
        # Errors propagate on purpose: a broken benchmark file should be fixed, not silently skipped.
        importlib.import_module(f"{BENCHMARK_PACKAGE}.{module}")


def available_benchmarks() -> list[str]:
    _import_benchmark_modules()
    return sorted(_REGISTRY)


def get_benchmark(name: str) -> Benchmark:
    """An instance of the benchmark registered as `name` (imports its module on first use)."""
    if name not in _REGISTRY:
        # Most benchmarks live in a file of their own name; others (coco5k beside coco30k) need the full scan.
        _import_benchmark_modules(only=name)
    if name not in _REGISTRY:
        _import_benchmark_modules()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown benchmark {name!r}; available: {', '.join(sorted(_REGISTRY)) or '(none)'}")
    return _REGISTRY[name]()
