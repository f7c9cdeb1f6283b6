"""From a composed Hydra/OmegaConf config to the library's typed settings, with validation up front.

Everything here runs in milliseconds and touches no model, so a bad command fails before any weight is loaded.
The library itself never imports Hydra; only `run.py` does.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from .errors import ConfigError
from .models import ModelSpec

STAGES = ("train", "generate", "evaluate", "report", "all")
STAGE_ORDER = ("train", "generate", "evaluate", "report")
METHOD_KINDS = ("hspace", "base", "negative_prompt", "sld", "esd", "sdisc")
CONCEPT_KINDS = ("fairness", "safety")
SAMPLING_MODES = ("balanced", "uniform")


def register_resolvers() -> None:
    """`${run_name:...}` turns Hydra's override string into a folder name ('default' when there is none)."""
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", run_folder_name)


def run_folder_name(overrides: str) -> str:
    if not overrides:
        return "default"
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
    """Check every choice the config makes; raise ConfigError naming the key and the allowed values."""
    stages_to_run(cfg.stage)
    model_spec(cfg)
    evaluator_scale(cfg)
    _validate_concepts(cfg.concepts)
    _validate_method(cfg)
    _validate_baseline(cfg)
    _validate_eval(cfg.eval, cfg.concepts)


def _validate_concepts(concepts: DictConfig) -> None:
    if concepts.kind not in CONCEPT_KINDS:
        raise ConfigError(f"concepts.kind {concepts.kind!r} is not one of {CONCEPT_KINDS}")
    if not concepts.get("items"):
        raise ConfigError(f"concepts {concepts.name!r} lists no items")
    needed = "target_prompt" if concepts.kind == "fairness" else "negative_prompt"
    for name, item in concepts["items"].items():
        if not item.get(needed):
            raise ConfigError(f"concept {name!r} of {concepts.name!r} needs {needed} ({concepts.kind} concept)")


def _validate_method(cfg: DictConfig) -> None:
    method = cfg.method
    kind = method.get("kind")
    if kind not in METHOD_KINDS:
        raise ConfigError(f"method.kind {kind!r} is not one of {METHOD_KINDS}")
    if kind != "hspace":
        return
    from .trainer import validate_concepts

    # The trainer's own dataclasses check every training choice; building them here makes those checks speak
    # before any model loads.
    settings = train_settings(cfg)
    validate_concepts(concept_specs(cfg), settings)
    if settings.parts == "ram_only" and settings.lambda_sem != 0:
        raise ConfigError(
            f"method.parts=ram_only trains no SAM, so method.lambda_sem must be 0 (got {settings.lambda_sem})"
        )


def _validate_baseline(cfg: DictConfig) -> None:
    from .baselines import validate_method

    validate_method(plain(cfg.method), plain(cfg.concepts), cfg.model.arch)


def _validate_eval(eval_cfg: DictConfig, concepts: DictConfig) -> None:
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
    from .evaluation.registry import get_benchmark

    for name in eval_cfg.benchmarks:
        get_benchmark(name)  # raises ConfigError listing the known benchmarks
    if eval_cfg.get("compose"):
        for key, weight in eval_cfg.compose.items():
            if float(weight) < 0:
                raise ConfigError(f"eval.compose.{key} must be >= 0")


def concept_specs(cfg: DictConfig) -> list:
    """The concept set as the trainer's ConceptSpecs (ConfigError naming the key for a value that is no number)."""
    from .trainer import ConceptSpec

    concepts = cfg.concepts
    specs = []
    for name, item in concepts["items"].items():
        where = f"concepts.items.{name}"
        specs.append(
            ConceptSpec(
                name=name,
                neutral_prompt=item.get("neutral_prompt") or concepts.neutral_prompt,
                target_prompt=item.get("target_prompt"),
                negative_prompt=item.get("negative_prompt"),
                lr_ram=_number(item, "lr_ram", where, float),
                lr_sam=_number(item, "lr_sam", where, float),
                guidance_target=None
                if item.get("guidance_target") is None
                else _number(item, "guidance_target", where, float),
            )
        )
    return specs


def train_settings(cfg: DictConfig):
    """method.*, train.* and the concept set's budgets as the trainer's TrainSettings, which checks them."""
    from .trainer import TrainSettings

    method, train, concepts = cfg.method, cfg.train, cfg.concepts

    def budget(key: str) -> int:
        # train.<key> beats method.<key> beats the concept set's default (PROTOCOL.md's per-task budgets).
        for section, source in (("train", train), ("method", method), ("concepts", concepts)):
            if source.get(key) is not None:
                return _number(source, key, section, int)
        raise ConfigError(f"no {key} configured for training")

    return TrainSettings(
        kind=concepts.kind,
        guidance_target=_number(concepts, "guidance_target", "concepts", float),
        parts=method.parts,
        parametrization=method.parametrization,
        init=method.init,
        init_scale=_number(method, "init_scale", "method", float),
        hidden_channels=_number(method, "hidden_channels", "method", int),
        lambda_sem=_number(method, "lambda_sem", "method", float),
        lambda_mode=method.get("lambda_mode", "loss"),
        iterations=budget("iterations"),
        batch_size=budget("batch_size"),
        guidance_reverse=_number(train, "guidance_reverse", "train", float),
        max_step_index=_number(train, "max_step_index", "train", int),
        num_inference_steps=_number(train, "num_inference_steps", "train", int),
        timestep=train.timestep,
        reverse_parts=method.reverse_parts,
        precision=train.precision,
        checkpoint_every=_number(train, "checkpoint_every", "train", int),
        log_every=_number(train, "log_every", "train", int),
        seed=_number(train, "seed", "train", int),
    )


def _number(node: DictConfig, key: str, where: str, kind: type):
    value = node.get(key)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key} must be a number, got {value!r}") from None


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


def apply_evaluator_scale(cfg: DictConfig) -> DictConfig:
    """Point the eval config at the stand-ins of the model's evaluation scale (in place; real changes nothing).

    Done on the config itself, so run.json, config.yaml and every results JSON show the files actually used.
    """
    from .evaluation.stand_ins import stand_in_settings

    overlay = stand_in_settings(evaluator_scale(cfg), cfg.paths.cache_dir)
    if overlay:
        with open_dict(cfg):
            # Explicit eval.evaluators.* overrides still win over the stand-ins' defaults.
            overlay["evaluators"].update(plain(cfg.eval.get("evaluators")) or {})
            cfg.eval = OmegaConf.merge(cfg.eval, overlay)
    return cfg


def plain(cfg: Any) -> Any:
    """A resolved plain-Python copy of a config node (what library functions take)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
