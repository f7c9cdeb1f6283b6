"""Which metrics a reproduction spec may name, with their direction and display label.

Specs are checked against this catalogue before any table is built, so a typo such as `devratio` fails at once
instead of rendering a column of dashes. The benchmark registry (respodiff.evaluation.registry) is the source of
truth once a benchmark is registered there; this table is the fallback that keeps `make paper-tables` working
without importing the evaluation stack (torch, CLIP, NudeNet) and before a benchmark is implemented.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from respodiff.errors import ConfigError

log = logging.getLogger(__name__)


class SpecError(ConfigError):
    """A reproduction spec is malformed or names something the project does not know."""


@dataclass(frozen=True)
class MetricInfo:
    benchmark: str
    name: str
    higher_is_better: bool
    label: str


def _m(benchmark: str, name: str, higher_is_better: bool, label: str) -> MetricInfo:
    return MetricInfo(benchmark, name, higher_is_better, label)


_BUILTIN: tuple[MetricInfo, ...] = (
    _m("winobias", "devrat", False, "DevRat"),
    _m("winobias", "winoalign", True, "WinoAlign"),
    _m("i2p", "inappropriate_rate", False, "Inappropriate"),
    _m("coco30k", "fid", False, "FID-30k"),
    _m("coco30k", "clip_score", True, "CLIP-30k"),
    _m("coco5k", "fid", False, "FID-5k"),
    _m("coco5k", "clip_score", True, "CLIP-5k"),
    # Toy world (benchmarks/*_toy.py): exact pixel classifiers replace CLIP / NudeNet / Q16. "Kind recognised" and
    # "Agreement" (caption-agreement score, 0..100) are the semantic-agreement analogues of WinoAlign / CLIP score.
    _m("winobias_toy", "devrat", False, "DevRat"),
    _m("winobias_toy", "kind_recognised", True, "Kind recognised"),
    _m("winobias_toy", "agreement", True, "Agreement"),
    _m("i2p_toy", "unsafe_rate", False, "Unsafe"),
    _m("i2p_toy", "kind_recognised", True, "Kind recognised"),
    _m("i2p_toy", "agreement", True, "Agreement"),
    # FID-toy: features from a CNN trained by the project on toy renders (not Inception; not comparable to FID).
    _m("coco_toy", "fid_toy", False, "FID-toy"),
    _m("coco_toy", "fid_toy_matched", False, "FID-toy (matched)"),
    _m("coco_toy", "agreement", True, "Agreement (COCO-toy)"),
    # The balanced-generator floor of DevRat (exact), and paired comparisons with the base model written by
    # `python -m respodiff.evaluation compare` as <benchmark>_vs_base (respodiff/evaluation/compare.py).
    *(_m(b, "devrat_floor", False, "Floor") for b in ("winobias", "winobias_toy")),
    *(_m(f"{b}_vs_base", "devrat_diff", False, "ΔDevRat") for b in ("winobias", "winobias_toy")),
    *(_m(f"{b}_vs_base", "leakage_tv", False, "Leakage (TV)") for b in ("winobias", "winobias_toy")),
    _m("winobias_vs_base", "winoalign_diff", True, "ΔWinoAlign"),
    _m("winobias_toy_vs_base", "agreement_diff", True, "ΔAgreement"),
    _m("winobias_toy_vs_base", "kind_recognised_diff", True, "ΔKind recognised"),
    _m("i2p_vs_base", "inappropriate_rate_diff", False, "ΔInappropriate"),
    _m("i2p_toy_vs_base", "unsafe_rate_diff", False, "ΔUnsafe"),
)

BUILTIN_METRICS: dict[tuple[str, str], MetricInfo] = {(m.benchmark, m.name): m for m in _BUILTIN}


def _from_registry(benchmark: str, name: str) -> MetricInfo | None:
    """Look the metric up in the benchmark registry; None when the registry or benchmark is unavailable."""
    try:
        from respodiff.evaluation import registry

        bench = registry.get_benchmark(benchmark)
    except Exception as exc:  # registry absent, benchmark unknown or its deps missing: all mean "not known here"
        log.debug("benchmark registry lookup for %s failed: %s", benchmark, exc)
        return None
    for metric in getattr(bench, "metrics", ()):
        if metric.name == name:
            return MetricInfo(benchmark, name, bool(metric.higher_is_better), name)
    return None


def metric_info(benchmark: str, name: str) -> MetricInfo:
    """Direction and label of a metric; raises SpecError naming the known metrics when it is unknown."""
    info = BUILTIN_METRICS.get((benchmark, name)) or _from_registry(benchmark, name)
    if info is None:
        known = sorted(m for b, m in BUILTIN_METRICS if b == benchmark)
        if known:
            hint = f"known metrics of benchmark {benchmark!r}: {', '.join(known)}"
        else:
            hint = f"known benchmarks: {', '.join(sorted({b for b, _ in BUILTIN_METRICS}))}"
        raise SpecError(f"unknown metric {benchmark!r}/{name!r} ({hint})")
    return info
