"""Benchmarks by name: the metric declarations, the result type and the base class every benchmark extends.

Benchmarks live one per file in the top-level `benchmarks/` package. They register themselves when their module is
imported, and `get_benchmark` imports those modules on demand, so importing respodiff stays cheap and a new
benchmark needs no edit here.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypedDict

import numpy as np
import pandas as pd

from respodiff.errors import ConfigError
from respodiff.evaluation.stats import DEFAULT_N_BOOTSTRAP, bootstrap_mean_ci, rng_for
from respodiff.registries import add_to_registry

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


# Settings every benchmark takes besides its own `setting_defaults`. The bootstrap keys may be set in its block of the
# eval config (eval.<name>); the run fills in all of them (respodiff/evaluation/setup.py: benchmark_settings).
BLOCK_DEFAULTS: dict[str, Any] = {
    "n_bootstrap": DEFAULT_N_BOOTSTRAP,  # resamples for 95% intervals; 0 = no intervals
    "bootstrap_seed": 0,
}
RUN_DEFAULTS: dict[str, Any] = {
    "concepts": None,  # the run's concept names (Winobias labels its classes with them)
    "attribute_prompts": None,
    "evaluators": None,  # the eval.evaluators block (respodiff/evaluation/evaluator_settings.py)
}


class Benchmark:
    """Base class. A subclass sets `name`, `metrics`, `requires` and `setting_defaults` and implements
    `prompt_table`, `samples_per_prompt` and `evaluate`; it extends `options` with checks of its own settings and
    `check_data` with its dataset files. Identity, evaluator asset checks and mean rows are shared here.

    `settings` is a plain dict: the benchmark's block of the eval config plus what the run adds. `evaluators` is a
    `respodiff.evaluation.evaluators.Evaluators` (or any object with the attributes the benchmark uses).
    """

    name: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]
    requires: ClassVar[frozenset[str]] = frozenset()  # evaluation models it scores with: clip, q16, nudenet, fid
    # How its images are seeded unless eval.seed_scheme says otherwise: "hashed" (stable_seed of benchmark, prompt id
    # and sample index) or "protocol" (the image's position: PROTOCOL.md's seed = caption index for COCO).
    seed_scheme: ClassVar[str] = "hashed"
    setting_defaults: ClassVar[dict[str, Any]] = {}
    # The prepared dataset (respodiff.datasets) its prompts come from, if any; its settings are dataset_defaults().
    dataset: ClassVar[str | None] = None

    # --- settings ---------------------------------------------------------------------------------------------

    @classmethod
    def block_keys(cls) -> frozenset[str]:
        """The keys its block of the eval config (eval.<name>) may set."""
        return frozenset(cls.setting_defaults) | frozenset(BLOCK_DEFAULTS)

    def key(self, setting: str) -> str:
        """A setting's full name in the config, for error messages."""
        return f"eval.{self.name}.{setting}"

    def read_settings(self, settings: Mapping[str, Any] | None) -> dict[str, Any]:
        """Settings with defaults filled in (None = the default); unknown keys refused, a typo must not pass."""
        given = dict(settings or {})
        allowed = {**BLOCK_DEFAULTS, **RUN_DEFAULTS, **self.setting_defaults}
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown settings {', '.join(self.key(k) for k in unknown)}; "
                              f"eval.{self.name} takes {sorted(self.block_keys())}")
        out = {**allowed, **{k: v for k, v in given.items() if v is not None}}
        out["n_bootstrap"] = self.integer(out, "n_bootstrap", minimum=0)
        out["bootstrap_seed"] = self.integer(out, "bootstrap_seed")
        if self.dataset is not None:
            from respodiff import datasets

            out["data_dir"] = out["data_dir"] or str(datasets.default_folder(self.dataset))
            out["dataset_size"] = self.integer(out, "dataset_size", minimum=1)
            if not isinstance(out["verify_checksums"], bool):
                raise ConfigError(f"{self.key('verify_checksums')} must be true or false, "
                                  f"got {out['verify_checksums']!r}")
        return out

    @staticmethod
    def dataset_defaults(dataset: str) -> dict[str, Any]:
        """The settings of a benchmark whose prompts come from a prepared dataset (for its `setting_defaults`)."""
        from respodiff import datasets

        return {
            "data_dir": None,  # default data/<dataset> under $RESPODIFF_DATA
            "dataset_size": datasets.DATASETS[dataset].expected_count,  # smaller only for a dev fixture
            "verify_checksums": False,  # True: rehash every dataset file before running
        }

    def options(self, settings: Mapping[str, Any] | None) -> Any:
        """The settings read and checked (no file is read); subclasses add checks of their own keys."""
        return self.read_settings(settings)

    def integer(self, settings: Mapping[str, Any], setting: str, minimum: int | None = None) -> int:
        value = settings[setting]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
                minimum is not None and value < minimum):
            rule = "an integer" + ("" if minimum is None else f" >= {minimum}")
            raise ConfigError(f"{self.key(setting)} must be {rule}, got {value!r}")
        return int(value)

    # --- files ------------------------------------------------------------------------------------------------

    def check_assets(self, settings: dict) -> None:
        """Raise MissingAssetError (naming the command to run) if data or evaluator files are missing."""
        self.check_data(self.options(settings))
        self.check_evaluators(settings)

    def check_data(self, options: Any) -> None:
        """Check the prepared dataset behind the prompt table (a benchmark whose prompts are code has none)."""
        if self.dataset is not None:
            from respodiff import datasets

            datasets.verify(self.dataset, options["data_dir"], expected_count=options["dataset_size"],
                            full=options["verify_checksums"])

    def check_evaluators(self, settings: Mapping[str, Any] | None) -> None:
        """Check the files of the evaluation models in `requires`, as eval.evaluators configures them."""
        if not self.requires:
            return
        from respodiff.evaluation.assets import check_evaluator_assets
        from respodiff.evaluation.evaluator_settings import EvaluatorSettings

        check_evaluator_assets(EvaluatorSettings.from_dict((settings or {}).get("evaluators")), self.requires)

    # --- the benchmark's work -----------------------------------------------------------------------------------

    def prompt_table(self, settings: dict) -> pd.DataFrame:
        """One row per prompt: prompt_id (str), prompt (str), plus metadata columns."""
        raise NotImplementedError

    def samples_per_prompt(self, settings: dict, n_concepts: int) -> int:
        raise NotImplementedError

    def evaluate(self, images: pd.DataFrame, settings: dict, evaluators: Any) -> BenchmarkResult:
        """Score a finished manifest (one row per image, `path` absolute)."""
        raise NotImplementedError

    # --- pieces of a result -------------------------------------------------------------------------------------

    def scorer_identity(self, evaluators: Any) -> dict[str, Any]:
        """Who scored: the evaluation models of `requires` (checkpoints, revisions, hashes, library versions)."""
        return dict(evaluators.identity(self.requires)) if hasattr(evaluators, "identity") else {}

    def identity(self, evaluators: Any, n_bootstrap: int, **details: Any) -> dict[str, Any]:
        """A result's evaluator record: the scorers, the benchmark's `details`, the bootstrap count, the metric
        versions, and at a stand-in scale the scale with (tiny) the warning that the numbers mean nothing."""
        out = {**self.scorer_identity(evaluators), **details, "bootstrap": int(n_bootstrap),
               "metrics": {metric.name: metric.version for metric in self.metrics}}
        scale = getattr(getattr(evaluators, "settings", None), "scale", None)
        if scale is not None:
            out.setdefault("scale", scale)
            if scale == "tiny":
                from respodiff.evaluation.evaluators import STAND_IN_WARNING

                out.setdefault("warning", STAND_IN_WARNING)
        return out

    def mean_rows(self, metric: Metric, values: Any, *, n_bootstrap: int, seed: int, groups: Any = None,
                  group_key: str = "", stream: tuple = (), clusters: Any = None,
                  group_clusters: Any = None) -> list[MetricValue]:
        """The mean of per-image `values` with its bootstrap interval, then with `groups` (one label per value) a
        row per label in sorted order, grouped as {group_key: label}; none for no values.

        `clusters` (one label per value) makes the headline row resample whole clusters (prompts, professions), and
        `group_clusters` the group rows; images sharing a prompt are not independent (stats.py).
        Each row draws from its own stream, (seed, *stream, metric name[, label]), so adding a row never moves
        another row's interval.
        """
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            return []
        clusters = None if clusters is None else np.asarray(clusters, dtype=object)
        mean, ci = bootstrap_mean_ci(values, n_boot=n_bootstrap, rng=rng_for(seed, *stream, metric.name),
                                     clusters=clusters)
        rows = [metric_value(metric, mean, n=len(values), ci=ci)]
        if groups is not None:
            labels = np.asarray(groups, dtype=object)
            within = None if group_clusters is None else np.asarray(group_clusters, dtype=object)
            for label in sorted(set(labels.tolist())):
                members = labels == label
                part = values[members]
                mean, ci = bootstrap_mean_ci(part, n_boot=n_bootstrap, rng=rng_for(seed, *stream, metric.name, label),
                                             clusters=None if within is None else within[members])
                rows.append(metric_value(metric, mean, n=len(part), ci=ci, group={group_key: label}))
        return rows


_REGISTRY: dict[str, type[Benchmark]] = {}


def register_benchmark(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator: make `cls` available under `cls.name`. Two different classes may not share a name."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{cls.__qualname__} needs a non-empty class attribute `name` to be registered")
    if not getattr(cls, "metrics", None):
        raise ConfigError(f"benchmark {name!r} ({cls.__qualname__}) declares no metrics")
    return add_to_registry(_REGISTRY, name, cls, "benchmark name")


def _benchmark_package():
    """The repository's top-level `benchmarks/` package. It is part of the checkout (like conf/ and run.py) and is not
    installed into site-packages under that generic name, so outside the checkout's folder it is found from here."""
    try:
        return importlib.import_module(BENCHMARK_PACKAGE)
    except ModuleNotFoundError as missing:
        if missing.name != BENCHMARK_PACKAGE:
            raise
    root = Path(__file__).resolve().parents[2]
    if not (root / BENCHMARK_PACKAGE / "__init__.py").is_file():
        raise ConfigError(f"the benchmarks/ folder of the respodiff repository is not in {root}; run respodiff from "
                          "a checkout of the repository")
    sys.path.append(str(root))
    return importlib.import_module(BENCHMARK_PACKAGE)


def _import_benchmark_modules(only: str | None = None) -> None:
    """Import `benchmarks.<only>` if it exists, or every module of the package when `only` is None."""
    package = _benchmark_package()
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
