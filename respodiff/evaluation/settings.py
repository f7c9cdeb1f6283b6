"""Reading a benchmark's plain-dict settings: defaults filled in, unknown keys refused (a typo must not pass).

Evaluator keys (clip_model, nudenet_threshold, q16_prompts, fid_mode, ...) may sit flat in a benchmark's settings,
as conf/eval does, or under `evaluators`; `EvaluatorConfig.from_settings` reads both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from respodiff.errors import ConfigError
from respodiff.evaluation.evaluators import EVALUATOR_ALIASES, EvaluatorConfig
from respodiff.evaluation.stats import DEFAULT_N_BOOTSTRAP

COMMON_DEFAULTS: dict[str, Any] = {
    "evaluators": None,
    "n_bootstrap": DEFAULT_N_BOOTSTRAP,  # resamples for 95% intervals; 0 = no intervals
    "bootstrap_seed": 0,
    "name": None,  # harmless if the config repeats the benchmark's name
    # The run stage passes these to every benchmark; Winobias uses them, the others ignore them.
    "concepts": None,
    "attribute_prompts": None,
}
# Names the run stage uses; an explicitly given canonical key wins over its alias.
SETTING_ALIASES = {"bootstrap": "n_bootstrap", "seed": "bootstrap_seed"}


def _evaluator_keys() -> set[str]:
    return {f.name for f in fields(EvaluatorConfig)} | set(EVALUATOR_ALIASES)


def read_settings(settings: Mapping[str, Any] | None, defaults: Mapping[str, Any], benchmark: str) -> dict[str, Any]:
    """Benchmark settings with defaults filled in; evaluator keys pass through for EvaluatorConfig."""
    given = dict(settings or {})
    for alias, name in SETTING_ALIASES.items():
        if alias in given:
            value = given.pop(alias)
            given.setdefault(name, value)
    allowed = {**COMMON_DEFAULTS, **defaults}
    unknown = sorted(set(given) - set(allowed) - _evaluator_keys())
    if unknown:
        raise ConfigError(f"unknown settings {unknown} for benchmark {benchmark!r}; valid: {sorted(allowed)} "
                          f"and the evaluator keys {sorted(_evaluator_keys())}")
    out = {**allowed, **{k: v for k, v in given.items() if v is not None}}
    if int(out["n_bootstrap"]) < 0:
        raise ConfigError(f"n_bootstrap must be >= 0, got {out['n_bootstrap']}")
    return out
