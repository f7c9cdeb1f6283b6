"""From a composed Hydra/OmegaConf config to the library's typed settings, with validation up front.

Everything here runs in milliseconds and touches no model, so a bad command fails before any weight is loaded.
The library itself never imports Hydra; only `run.py` does.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from .errors import ConfigError
from .models import ModelSpec

log = logging.getLogger("respodiff")

# attack runs only when named (stage=attack attack=<name>): it is not part of "all" (respodiff/attacks/).
STAGES = ("train", "generate", "evaluate", "report", "all", "attack")
STAGE_ORDER = ("train", "generate", "evaluate", "report")
CONCEPT_KINDS = ("fairness", "safety")
SAMPLING_MODES = ("balanced", "uniform")

# The keys each section of a composed config may have (method.* keys are the method's own: respodiff/methods/,
# attack.* keys the attack's own: respodiff/attacks/, and the benchmark blocks and eval.evaluators are the evaluation
# package's). A key outside these is refused by its full name, so a typo in a command or a YAML file never silently
# does nothing.
TOP_LEVEL_KEYS = frozenset({
    "experiment_name", "stage", "seed", "device", "threads",
    "model", "concepts", "method", "train", "eval", "logger", "paths", "attack",
})
MODEL_KEYS = frozenset({"name", "source", "id", "arch", "revision", "variant", "resolution", "dtype", "cache_dir",
                        "evaluators"})
CONCEPT_SET_KEYS = frozenset({"name", "kind", "neutral_prompt", "guidance_target", "iterations", "batch_size", "items",
                              "attribute_prompts", "compose_cycle"})
CONCEPT_ITEM_KEYS = frozenset({"target_prompt", "negative_prompt", "neutral_prompt", "lr_ram", "lr_sam",
                               "guidance_target"})
TRAIN_KEYS = frozenset({"iterations", "batch_size", "guidance_reverse", "max_step_index", "num_inference_steps",
                        "timestep", "precision", "checkpoint_every", "log_every", "seed", "overwrite"})
EVAL_KEYS = frozenset({"benchmarks", "sampler", "sampling", "compose", "bootstrap", "force", "evaluators", "image_format",
                       "seed_scheme"})
SAMPLER_KEYS = frozenset({"steps", "guidance_scale", "batch_size", "eta", "batch_invariant"})
LOGGER_KEYS = frozenset({"name", "type", "project", "entity", "mode", "tags", "notes", "init_timeout", "log_config",
                         "settings"})
PATHS_KEYS = frozenset({"output_dir", "data_dir", "cache_dir"})
# Lists that may be empty, with the meaning an empty one has (any other empty list is refused: an empty
# `eval.winobias.professions` must not quietly mean "all of them").
EMPTY_LISTS_ALLOWED = {
    "concepts.attribute_prompts": "safety concept sets classify no attribute",
    "logger.tags": "no W&B tags",
    "eval.benchmarks": "nothing to generate or evaluate: allowed with stage=train only (checked with the stage)",
}


def register_resolvers() -> None:
    """`${run_name:...}` turns Hydra's override string into a folder name ('default' when there is none)."""
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", run_folder_name)


def run_folder_name(overrides: str) -> str:
    if not overrides:
        return "default"
    # "++key=value" sets a key a swept choice may lack (Hydra checks a multirun's overrides against the config
    # before the sweep, so `method=sld_weak,sld_max method.safety_concept=...` fails there); the value is the same
    # as "key=value", and so is the folder.
    overrides = re.sub(r"(^|,)\+{1,2}", r"\1", overrides)
    # A path in an override value must not create sub-folders.
    return re.sub(r"[/\\]+", "_", overrides)


def stages_to_run(stage: str) -> tuple[str, ...]:
    if stage not in STAGES:
        raise ConfigError(f"stage={stage!r} is not one of {', '.join(STAGES)}")
    return STAGE_ORDER if stage == "all" else (stage,)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was requested but no CUDA device is available")
    return name


def model_spec(cfg: DictConfig) -> ModelSpec:
    return ModelSpec.from_config(OmegaConf.to_container(cfg.model, resolve=True))


def validate(cfg: DictConfig) -> None:
    """Check every key and choice the config makes; raise ConfigError naming the key and the allowed values."""
    from .methods import build_method

    stages = stages_to_run(cfg.stage)
    check_known_keys(cfg)
    check_no_empty_lists(cfg)
    model_spec(cfg)
    evaluator_scale(cfg)
    _validate_concepts(cfg.concepts)
    build_method(plain(cfg)).validate(cfg.model.arch)
    _validate_eval(cfg, generates=bool({"generate", "evaluate", "report"} & set(stages)))
    from .attacks.stage import validate_attack

    validate_attack(plain(cfg), stages)


def check_known_keys(cfg: DictConfig) -> None:
    """Refuse any key no part of respodiff reads, naming it in full (e.g. `concepts.lambda_pub`)."""
    from .evaluation.setup import benchmark_blocks

    sections = {
        "": (cfg, TOP_LEVEL_KEYS),
        "model": (cfg.model, MODEL_KEYS),
        "concepts": (cfg.concepts, CONCEPT_SET_KEYS),
        "train": (cfg.train, TRAIN_KEYS),
        "eval": (cfg.eval, EVAL_KEYS | set(benchmark_blocks(plain(cfg.eval)))),
        "eval.sampler": (cfg.eval.sampler, SAMPLER_KEYS),
        "paths": (cfg.paths, PATHS_KEYS),
    }
    if OmegaConf.is_dict(cfg.get("logger")):
        sections["logger"] = (cfg.logger, LOGGER_KEYS)
    for name, item in (cfg.concepts.get("items") or {}).items():
        sections[f"concepts.items.{name}"] = (item, CONCEPT_ITEM_KEYS)
    for where, (node, allowed) in sections.items():
        unknown = sorted(set(node.keys()) - set(allowed)) if OmegaConf.is_dict(node) else []
        if unknown:
            prefix = f"{where}." if where else ""
            raise ConfigError(
                f"unknown config key(s) {', '.join(prefix + str(key) for key in unknown)}; "
                f"{where or 'the top level'} takes {sorted(allowed)}"
            )


def check_no_empty_lists(cfg: DictConfig) -> None:
    """Refuse an empty list anywhere in the config unless EMPTY_LISTS_ALLOWED documents what it means."""

    def walk(node: Any, where: str) -> None:
        if OmegaConf.is_dict(node):
            # Unresolved: an interpolation (e.g. ${concepts.attribute_prompts}) is checked where it is defined.
            for key, value in node.items_ex(resolve=False):
                walk(value, f"{where}.{key}" if where else str(key))
        elif OmegaConf.is_list(node):
            if len(node) == 0 and where not in EMPTY_LISTS_ALLOWED:
                raise ConfigError(f"{where} is an empty list; name at least one item (or leave the key at its "
                                  "default) — an empty list would run with no items or quietly mean all of them")

    walk(cfg, "")


def eval_context(cfg: DictConfig | Mapping[str, Any]):
    """What every benchmark is told besides its own block: seed, cache folder, the concept set's names (from the
    composed config or its plain copy, as the attack stage holds it)."""
    from .evaluation.setup import EvalContext

    concepts = cfg["concepts"]
    return EvalContext(
        seed=int(cfg["seed"]),
        cache_dir=str(cfg["paths"]["cache_dir"]),
        concepts=list(concepts["items"]),
        attribute_prompts=list(concepts.get("attribute_prompts") or []),
    )


def _validate_concepts(concepts: DictConfig) -> None:
    if concepts.kind not in CONCEPT_KINDS:
        raise ConfigError(f"concepts.kind {concepts.kind!r} is not one of {CONCEPT_KINDS}")
    if not concepts.get("items"):
        raise ConfigError(f"concepts {concepts.name!r} lists no items")
    needed = "target_prompt" if concepts.kind == "fairness" else "negative_prompt"
    for name, item in concepts["items"].items():
        if not item.get(needed):
            raise ConfigError(f"concept {name!r} of {concepts.name!r} needs {needed} ({concepts.kind} concept)")


def _validate_eval(cfg: DictConfig, generates: bool = True) -> None:
    from .evaluation.setup import validate_eval

    eval_cfg = cfg.eval
    if generates and not eval_cfg.benchmarks:
        raise ConfigError("eval.benchmarks names no benchmark, so there is nothing to generate or evaluate; name "
                          "one (e.g. eval.benchmarks=[winobias]) or run stage=train only")
    if eval_cfg.sampling not in SAMPLING_MODES:
        raise ConfigError(f"eval.sampling {eval_cfg.sampling!r} is not one of {SAMPLING_MODES}")
    sampler = eval_cfg.sampler
    if int(sampler.steps) < 1 or int(sampler.batch_size) < 1:
        raise ConfigError("eval.sampler.steps and eval.sampler.batch_size must be >= 1")
    if float(sampler.guidance_scale) < 1:
        raise ConfigError("eval.sampler.guidance_scale must be >= 1")
    batch_invariant(eval_cfg)
    if not isinstance(eval_cfg.get("force", False), bool):
        raise ConfigError(f"eval.force must be true or false, got {eval_cfg.force!r}")
    if eval_cfg.get("compose"):
        concepts = list(cfg.concepts["items"])
        for key, weight in eval_cfg.compose.items():
            if key not in concepts:
                raise ConfigError(f"eval.compose.{key}: {key!r} is not a concept of {cfg.concepts.name!r}; the "
                                  f"composition weighs the run's own concepts {concepts}")
            if float(weight) < 0:
                raise ConfigError(f"eval.compose.{key} must be >= 0")
    validate_eval(plain(eval_cfg), eval_context(cfg))


def batch_invariant(eval_cfg: DictConfig) -> bool | None:
    """eval.sampler.batch_invariant as generate() takes it: None (auto = the engine's default), True or False."""
    value = eval_cfg.sampler.get("batch_invariant", "auto")
    if isinstance(value, bool):
        return value
    if value == "auto":
        return None
    raise ConfigError(f"eval.sampler.batch_invariant must be auto, true or false, got {value!r}")


def evaluator_scale(cfg: DictConfig) -> str:
    """model.evaluators: real | toy | tiny (a model config without the key is evaluated for real)."""
    from .evaluation.stand_ins import check_scale

    return check_scale(cfg.model.get("evaluators") or "real")


def apply_evaluator_scale(cfg: DictConfig, overrides: Iterable[str] = ()) -> DictConfig:
    """Point the eval config at the stand-ins of the model's evaluation scale (in place; real changes nothing).

    Done on the config itself, so run.json, config.yaml and every results JSON show the files actually used. What
    the user set explicitly wins: values given in eval.evaluators (null there means "the default") and any benchmark
    setting named in the command's `overrides`; every benchmark setting the stand-ins do replace is logged.
    """
    from .evaluation.stand_ins import stand_in_settings

    scale = evaluator_scale(cfg)
    overlay = stand_in_settings(scale, cfg.paths.cache_dir)
    if not overlay:
        return cfg
    overlay["evaluators"] = _non_null_over(overlay.get("evaluators") or {}, plain(cfg.eval.get("evaluators")))
    explicit = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    for block, values in overlay.items():
        if block == "evaluators":
            continue
        for key in list(values):
            where = f"eval.{block}.{key}"
            current = OmegaConf.select(cfg, where)
            if where in explicit:
                log.warning("%s=%s kept as given (the %s scale's stand-in would be %s)", where, current, scale,
                            values.pop(key))
            elif current is not None and current != values[key]:
                log.info("%s: %s -> %s (the %s scale's stand-in)", where, current, values[key], scale)
    with open_dict(cfg):
        cfg.eval = OmegaConf.merge(cfg.eval, overlay)
    return cfg


def _non_null_over(base: dict[str, Any], given: Any) -> dict[str, Any]:
    """`base` with every non-null value of `given` laid over it, nested blocks merged key by key."""
    merged = dict(base)
    for key, value in (given or {}).items():
        if isinstance(value, dict):
            merged[key] = _non_null_over(merged.get(key) or {}, value)
        elif value is not None:
            merged[key] = value
    return merged


def plain(cfg: Any) -> Any:
    """A resolved plain-Python copy of a config node (what library functions take)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
