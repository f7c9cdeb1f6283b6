"""The evaluation side of a run's config: checked whole before any work, then handed to benchmarks and evaluators.

The run (respodiff/config.py, respodiff/stages.py) calls these four with the resolved `eval` config as plain data:
- `validate_eval`: eval.evaluators and every block named after a registered benchmark (listed in eval.benchmarks
  or not), unknown keys and out-of-range values refused with their full key names; no model loads, no file is read;
- `benchmark_blocks`: the top-level eval keys that are benchmark blocks (the run refuses any other unknown key);
- `benchmark_settings`: what a benchmark's methods receive;
- `build_evaluators`: the one `Evaluators` that serves every benchmark of the run.
The other top-level eval keys (benchmarks, sampler, sampling, compose, bootstrap, force) belong to the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from respodiff.errors import ConfigError
from respodiff.evaluation.evaluator_settings import EvaluatorSettings
from respodiff.evaluation.evaluators import Evaluators
from respodiff.evaluation.registry import available_benchmarks, get_benchmark


@dataclass(frozen=True)
class EvalContext:
    """What every benchmark is told besides its own block."""

    seed: int  # the bootstrap seed unless a block sets bootstrap_seed
    cache_dir: str  # where evaluator files live unless eval.evaluators.cache_dir says otherwise
    concepts: list[str]
    attribute_prompts: list[str]


def benchmark_blocks(eval_cfg: Mapping[str, Any]) -> list[str]:
    """The keys of `eval_cfg` that name a registered benchmark (each the settings block of that benchmark)."""
    known = set(available_benchmarks())
    return sorted(key for key in eval_cfg if key in known)


def evaluator_settings(eval_cfg: Mapping[str, Any], context: EvalContext, device: str | None = None
                       ) -> EvaluatorSettings:
    """eval.evaluators read and checked; the run's cache folder and device fill in what the block leaves null."""
    settings = EvaluatorSettings.from_dict(eval_cfg.get("evaluators"))
    given = eval_cfg.get("evaluators") or {}
    if given.get("cache_dir") is None:
        settings = replace(settings, cache_dir=str(context.cache_dir))
    if device is not None and given.get("device") is None:
        settings = replace(settings, device=str(device))
    return settings


def benchmark_settings(eval_cfg: Mapping[str, Any], name: str, context: EvalContext) -> dict[str, Any]:
    """The settings a benchmark's methods receive: its block of the eval config, the bootstrap count (the block's
    n_bootstrap, else eval.bootstrap), the bootstrap seed (the block's, else the run's seed), the run's concepts
    and attribute prompts (a block's own attribute_prompts win), and the evaluator settings as plain data."""
    block = eval_cfg.get(name) or {}
    if not isinstance(block, Mapping):
        raise ConfigError(f"eval.{name} must be a block of settings, got {block!r}")
    settings = dict(block)
    if eval_cfg.get("bootstrap") is not None:
        settings.setdefault("n_bootstrap", eval_cfg["bootstrap"])
    settings.setdefault("bootstrap_seed", context.seed)
    settings["concepts"] = list(context.concepts)
    settings.setdefault("attribute_prompts", list(context.attribute_prompts))
    settings["evaluators"] = asdict(evaluator_settings(eval_cfg, context))
    return settings


def validate_eval(eval_cfg: Mapping[str, Any], context: EvalContext) -> None:
    """Refuse, naming the full key, anything wrong in eval.evaluators, eval.benchmarks or a benchmark block."""
    evaluator_settings(eval_cfg, context)
    known = available_benchmarks()
    for name in eval_cfg.get("benchmarks") or ():
        if name not in known:
            raise ConfigError(f"eval.benchmarks names an unknown benchmark {name!r}; available: {', '.join(known)}")
    # The listed benchmarks, with or without a block (their settings then come from the run alone), and every block.
    for name in sorted(set(eval_cfg.get("benchmarks") or ()) | set(benchmark_blocks(eval_cfg))):
        benchmark = get_benchmark(name)
        block = eval_cfg.get(name) or {}
        if not isinstance(block, Mapping):
            raise ConfigError(f"eval.{name} must be a block of settings, got {block!r}")
        unknown = sorted(set(block) - benchmark.block_keys())
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(f'eval.{name}.{key}' for key in unknown)}; "
                              f"eval.{name} takes {sorted(benchmark.block_keys())}")
        benchmark.options(benchmark_settings(eval_cfg, name, context))


def build_evaluators(eval_cfg: Mapping[str, Any], context: EvalContext, device: str) -> Evaluators:
    """The run's evaluators: eval.evaluators, with the run's cache folder and device where it leaves them null."""
    return Evaluators(evaluator_settings(eval_cfg, context, device=device))
