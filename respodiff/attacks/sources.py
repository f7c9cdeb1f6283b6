"""The source prompts an attack works on: an I2P-style benchmark's unsafe prompts (i2p, i2p_toy), hard subset first.

`attack.source` names the benchmark; left null, it is the first benchmark of eval.benchmarks that scores unsafe
prompts I2P's way (i2p at the paper scale, i2p_toy on the toy world). Naming is checked at config time; the prompt
table is read (and a prepared dataset verified) when the attack stage starts, before any model loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..errors import ConfigError

SOURCE_COLUMNS = ("prompt_id", "prompt", "categories", "hard")


def _unsafe_prompt_benchmark(name: str) -> bool:
    from ..evaluation.registry import get_benchmark

    benchmark = get_benchmark(name)
    # I2P-style: flags per image from detectors, a category and hard label per prompt; replays are not sources.
    return hasattr(benchmark, "rate_metric") and not getattr(benchmark, "replays_attacks", False)


def source_benchmark(cfg: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """The benchmark whose prompts are attacked (config time: no file read)."""
    from ..evaluation.registry import available_benchmarks

    named = options.get("source")
    if named is not None:
        if named not in available_benchmarks() or not _unsafe_prompt_benchmark(named):
            usable = [name for name in available_benchmarks() if _unsafe_prompt_benchmark(name)]
            raise ConfigError(f"attack.source {named!r} is not a benchmark of unsafe prompts; use one of {usable}")
        return str(named)
    for name in cfg["eval"].get("benchmarks") or ():
        if _unsafe_prompt_benchmark(name):
            return str(name)
    raise ConfigError(f"the attack needs unsafe prompts to start from, and eval.benchmarks "
                      f"{list(cfg['eval'].get('benchmarks') or [])} names no unsafe-prompt benchmark; set "
                      "attack.source=i2p (paper scale) or attack.source=i2p_toy (toy world)")


def _settings(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    from ..config import eval_context
    from ..evaluation.setup import benchmark_settings

    return benchmark_settings(cfg["eval"], name, eval_context(cfg))


def source_prompts(cfg: Mapping[str, Any], options: Mapping[str, Any]) -> tuple[str, pd.DataFrame]:
    """(benchmark name, its prompts as attacked: prompt_id, prompt, categories, hard), after checking its data."""
    from ..evaluation.registry import get_benchmark
    from ..evaluation.safety import strict_flags

    name = source_benchmark(cfg, options)
    benchmark = get_benchmark(name)
    settings = _settings(cfg, name)
    scale = (cfg["model"].get("evaluators") or "real")
    if scale != "real" and benchmark.dataset is not None:
        from ..evaluation.stand_ins import ensure_stand_ins

        ensure_stand_ins(cfg["paths"]["cache_dir"])  # the tiny / toy scale reads its dataset fixture
    benchmark.check_data(benchmark.options(settings))
    table = benchmark.prompt_table(settings)
    missing = [column for column in SOURCE_COLUMNS if column not in table.columns]
    if missing:
        raise ConfigError(f"the {name} prompt table lacks {missing}; an attack needs {list(SOURCE_COLUMNS)}")
    table = table[list(SOURCE_COLUMNS)].copy()
    table["prompt_id"] = table["prompt_id"].astype(str)
    table["hard"] = strict_flags(table["hard"], f"the {name} prompt table's hard column")
    if options["hard_only"]:
        table = table[table["hard"]]
    if options["max_prompts"] is not None:
        table = table.head(int(options["max_prompts"]))
    if table.empty:
        raise ConfigError(f"no {name} prompt is left to attack (attack.hard_only={options['hard_only']}, "
                          f"attack.max_prompts={options['max_prompts']})")
    return name, table.reset_index(drop=True)
