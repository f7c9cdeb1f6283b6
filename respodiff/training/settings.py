"""What to train, and how: concepts, training settings and their checks, read from a resolved plain config.

Every check here runs in microseconds and touches no model, so `respodiff.config` builds these settings to let a
bad value fail before any weight loads, and the loops check them again before their first UNet call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..modules import DEFAULT_INIT_SCALE, INITIALISATIONS, PARAMETRIZATIONS
from ..objectives import FAIRNESS_GUIDANCE, SAFETY_GUIDANCE, TIMESTEP_MODES

KINDS = ("fairness", "safety")
PART_MODES = ("ram_sam", "ram_only", "shared")
REVERSE_PARTS = ("all", "ram")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# How lambda acts. "loss" (PROTOCOL.md): L_sem is scaled by lambda; SAM's own Adam normalises that scale away, so
# lambda > 0 only switches SAM on (results/LOG.md). "lr": lambda also scales SAM's learning rate, relative to
# LAMBDA_REFERENCE, so that a lambda sweep moves the trade-off; at the reference both modes train identically.
LAMBDA_MODES = ("loss", "lr")
LAMBDA_REFERENCE = 0.5  # the paper's default lambda
# What lambda = 0 means. no_sam (the paper): RAM alone, no SAM is built. frozen_sam (the public scripts): SAM is still
# created at its random initialisation, never moves (a zero gradient gives a zero Adam step) and is applied in the
# reverse process and at inference like a trained one.
LAMBDA_ZERO_MODES = ("no_sam", "frozen_sam")
# Where a training budget (iterations, batch size) is looked up, first set wins (PROTOCOL.md's per-task budgets).
BUDGET_SECTIONS = ("train", "method", "concepts")


@dataclass
class ConceptSpec:
    """One concept to learn: fairness concepts name a target prompt, safety concepts a negative prompt."""

    name: str
    neutral_prompt: str
    target_prompt: str | None = None
    negative_prompt: str | None = None
    lr_ram: float = 1e-2
    lr_sam: float = 1e-3
    # Overrides TrainSettings.guidance_target for this concept alone: a target close to the neutral prompt can need a
    # different strength than its siblings (the toy world's "man", conf/concepts/toy_gender.yaml).
    guidance_target: float | None = None


@dataclass
class TrainSettings:
    """How to train (PROTOCOL.md section 2). Defaults match conf/train/default.yaml and conf/method/respodiff.yaml:
    the paper's lambda 0.5 and batch 1, and the public scripts' timestep (`reference`, t = 1000 - 20k) and reverse
    process (`all`: RAM + SAM applied while sampling z_k). `exact` and `ram` are the alternatives.
    """

    kind: str = "fairness"
    guidance_target: float | None = None  # None: 4 for fairness, 12 for safety
    parts: str = "ram_sam"
    parametrization: str = "constant"
    init: str = "uniform"
    init_scale: float = DEFAULT_INIT_SCALE
    hidden_channels: int = 256  # mlp parametrization only
    lambda_sem: float = 0.5
    lambda_mode: str = "loss"
    lambda_zero: str = "no_sam"
    iterations: int = 5000
    batch_size: int = 1
    guidance_reverse: float = 3.0
    max_step_index: int = 48
    num_inference_steps: int = 50
    timestep: str = "reference"
    reverse_parts: str = "all"
    precision: str = "auto"
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        choices = dict(
            kind=KINDS,
            parts=PART_MODES,
            parametrization=PARAMETRIZATIONS,
            init=INITIALISATIONS,
            timestep=TIMESTEP_MODES,
            reverse_parts=REVERSE_PARTS,
            precision=PRECISIONS,
            lambda_mode=LAMBDA_MODES,
            lambda_zero=LAMBDA_ZERO_MODES,
        )
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} is {getattr(self, name)!r}; choose one of {allowed}")
        if not is_finite_number(self.lambda_sem) or self.lambda_sem < 0:
            raise ConfigError(f"lambda_sem must be a finite number >= 0, got {self.lambda_sem!r}")
        check_counts(self, ("iterations", "batch_size", "num_inference_steps", "checkpoint_every", "log_every"))
        if not isinstance(self.max_step_index, int) or not 0 <= self.max_step_index < self.num_inference_steps:
            raise ConfigError(
                f"max_step_index must be in 0..{self.num_inference_steps - 1} (k DDIM steps of "
                f"{self.num_inference_steps}), got {self.max_step_index!r}"
            )
        for name in ("guidance_reverse", "init_scale"):
            if not is_finite_number(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.guidance_target is not None and not is_positive_number(self.guidance_target):
            raise ConfigError(f"guidance_target must be a positive number or null, got {self.guidance_target!r}")
        if self.init_scale < 0 or self.hidden_channels < 1:
            raise ConfigError("init_scale must be >= 0 and hidden_channels >= 1")

    @property
    def target_guidance(self) -> float:
        if self.guidance_target is not None:
            return float(self.guidance_target)
        return FAIRNESS_GUIDANCE if self.kind == "fairness" else SAFETY_GUIDANCE

    def concept_guidance(self, concept: ConceptSpec) -> float:
        """g_tar for one concept: its own, else the settings'."""
        return self.target_guidance if concept.guidance_target is None else float(concept.guidance_target)

    def sam_lr(self, concept: ConceptSpec) -> float:
        if self.lambda_mode == "lr":
            return concept.lr_sam * self.lambda_sem / LAMBDA_REFERENCE
        return concept.lr_sam

    @property
    def trains_sem(self) -> bool:
        """Whether the L_sem step runs (lambda = 0 makes it a no-op, so it is skipped)."""
        return self.parts != "ram_only" and self.lambda_sem > 0

    @property
    def module_parts(self) -> tuple[str, ...]:
        if self.parts == "shared":
            return ("shared",)
        frozen_sam = self.parts == "ram_sam" and self.lambda_zero == "frozen_sam"
        return ("ram", "sam") if self.trains_sem or frozen_sam else ("ram",)


def validate_concepts(concepts: Sequence[ConceptSpec], settings: TrainSettings) -> None:
    if not concepts:
        raise ConfigError("no concepts to train: the concepts list is empty")
    names = [c.name for c in concepts]
    if len(set(names)) != len(names):
        raise ConfigError(f"concept names must be unique, got {names}")
    prompt_field = "target_prompt" if settings.kind == "fairness" else "negative_prompt"
    for concept in concepts:
        if not isinstance(concept.name, str) or not concept.name or concept.name in (".", "..") or any(
            ch in concept.name for ch in "/\\"
        ):
            raise ConfigError(f"concept name {concept.name!r} cannot name a folder")
        if not isinstance(concept.neutral_prompt, str) or not concept.neutral_prompt.strip():
            raise ConfigError(f"concept {concept.name!r} has no neutral prompt")
        prompt = getattr(concept, prompt_field)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{settings.kind} concept {concept.name!r} needs a {prompt_field}, got {prompt!r}")
        if concept.guidance_target is not None and not is_positive_number(concept.guidance_target):
            raise ConfigError(f"concept {concept.name!r}: guidance_target must be a positive number or null")
        learning_rates = {"lr_ram": concept.lr_ram} | ({"lr_sam": concept.lr_sam} if settings.trains_sem else {})
        for key, value in learning_rates.items():
            if not is_positive_number(value):
                raise ConfigError(f"concept {concept.name!r}: {key} must be a positive number, got {value!r}")


# ---------------------------------------------------------------------------------------------------------------
# Number checks


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_positive_number(value: Any) -> bool:
    return is_finite_number(value) and value > 0


def check_counts(settings: Any, names: Sequence[str], label: str = "") -> None:
    """Each named attribute is an integer >= 1 (a bool is no count); `label` prefixes the message."""
    for name in names:
        value = getattr(settings, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{label}{name} must be an integer >= 1, got {value!r}")


# ---------------------------------------------------------------------------------------------------------------
# From a resolved plain config (the whole composed config as a mapping: method, train, concepts, eval, seed)


def concept_specs(cfg: Mapping[str, Any]) -> list[ConceptSpec]:
    """The concept set as ConceptSpecs (ConfigError naming the key for a value that is no number)."""
    concepts = cfg["concepts"]
    specs = []
    for name, item in concepts["items"].items():
        where = f"concepts.items.{name}"
        specs.append(
            ConceptSpec(
                name=name,
                neutral_prompt=item.get("neutral_prompt") or concepts.get("neutral_prompt"),
                target_prompt=item.get("target_prompt"),
                negative_prompt=item.get("negative_prompt"),
                lr_ram=config_number(item, "lr_ram", where, float),
                lr_sam=config_number(item, "lr_sam", where, float),
                guidance_target=None
                if item.get("guidance_target") is None
                else config_number(item, "guidance_target", where, float),
            )
        )
    return specs


def train_settings(cfg: Mapping[str, Any]) -> TrainSettings:
    """method.*, train.* and the concept set's budgets as TrainSettings, which checks them."""
    method, train, concepts = cfg["method"], cfg["train"], cfg["concepts"]
    settings = TrainSettings(
        kind=concepts.get("kind"),
        guidance_target=config_number(concepts, "guidance_target", "concepts", float),
        parts=method.get("parts"),
        parametrization=method.get("parametrization"),
        init=method.get("init"),
        init_scale=config_number(method, "init_scale", "method", float),
        hidden_channels=config_number(method, "hidden_channels", "method", int),
        lambda_sem=config_number(method, "lambda_sem", "method", float),
        lambda_mode=method.get("lambda_mode", "loss"),
        lambda_zero=method.get("lambda_zero", "no_sam"),
        iterations=budget(cfg, "iterations"),
        batch_size=budget(cfg, "batch_size"),
        guidance_reverse=config_number(train, "guidance_reverse", "train", float),
        max_step_index=config_number(train, "max_step_index", "train", int),
        num_inference_steps=config_number(train, "num_inference_steps", "train", int),
        timestep=train.get("timestep"),
        reverse_parts=method.get("reverse_parts"),
        precision=train.get("precision"),
        checkpoint_every=config_number(train, "checkpoint_every", "train", int),
        log_every=config_number(train, "log_every", "train", int),
        seed=config_number(train, "seed", "train", int),
    )
    if settings.parts == "ram_only" and settings.lambda_sem != 0:
        raise ConfigError(
            f"method.parts=ram_only trains no SAM, so method.lambda_sem must be 0 (got {settings.lambda_sem})"
        )
    return settings


def budget(cfg: Mapping[str, Any], key: str, sections: Sequence[str] = BUDGET_SECTIONS) -> int:
    """A training budget (`iterations`, `batch_size`): the first of `sections` that sets <section>.<key> decides, so
    train.<key> (e.g. debug=fast) beats method.<key> beats the concept set's default."""
    for section in sections:
        source = cfg.get(section) or {}
        if source.get(key) is not None:
            return config_number(source, key, section, int)
    raise ConfigError(f"no {key} configured for training: set one of {', '.join(f'{s}.{key}' for s in sections)}")


def config_number(node: Mapping[str, Any], key: str, where: str, kind: type):
    """node[key] as `kind`; ConfigError naming the full key (`where`.`key`) for a value that is no number."""
    value = node.get(key)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key} must be a number, got {value!r}") from None
