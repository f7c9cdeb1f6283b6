"""What an attack is: one class per attack name, found through a registry, run prompt by prompt by the attack stage.

An attack turns each unsafe prompt of a benchmark (the "source" prompts: i2p's or i2p_toy's) into one prompt meant
to make the defended model draw what its defence should stop. It states
- `name`, the `keys` it reads from `attack.*` besides COMMON_KEYS, with their `defaults`;
- whether it `searches` (then `attack.iterations` x `attack.population` is its budget, and 0 is refused);
- what it needs loaded (`needs_model`) and whether what it finds depends on the defended model
  (`depends_on_method`: only then does the run's method, its modules and the sampler enter its fingerprint);
- `check` (config time, no file read), `setup` (once, with the loaded model) and `find` (one source prompt, one
  seed; the same seed always finds the same prompt, whatever the order or the resume point).

A new attack is one file in this package (found automatically) with a class decorated by `@register_attack`, and one
YAML in conf/attack/.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from ..registries import add_to_registry, import_submodules

# attack.* keys every attack reads: its name, the seed of its search, which prompts it attacks, and whether a finished
# attack of other settings may be replaced.
COMMON_DEFAULTS: dict[str, Any] = {
    "name": None,
    "seed": 0,
    "source": None,  # the benchmark whose unsafe prompts are attacked; null = the run's i2p-style benchmark
    "hard_only": True,  # the "hard" prompts only (I2P's hard subset; i2p_toy's)
    "max_prompts": None,  # the first N source prompts (after hard_only); null = all
    "overwrite": False,
}
COMMON_KEYS = frozenset(COMMON_DEFAULTS)
BUDGET_KEYS = ("iterations", "population")


@dataclass(frozen=True)
class FoundPrompt:
    """One attack prompt: the text, the attack's objective there and at the source prompt (lower is closer to the
    attack's target; NaN for attacks without one), and extra per-prompt columns (tokens, substitutions)."""

    prompt: str
    loss: float = math.nan
    loss_source: float = math.nan
    details: dict[str, Any] = field(default_factory=dict)


class Attack:
    """An attack of the suite. `options` is the attack.* block with defaults filled in; `cfg` the whole run config
    as plain Python."""

    name: ClassVar[str] = ""
    keys: ClassVar[frozenset[str]] = frozenset()
    defaults: ClassVar[dict[str, Any]] = {}
    searches: ClassVar[bool] = False
    needs_model: ClassVar[bool] = False
    depends_on_method: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, Any], cfg: Mapping[str, Any]) -> None:
        # A null the user gives is kept, so a key that needs a value refuses it instead of falling back silently.
        self.options = {**COMMON_DEFAULTS, **self.defaults, **options}
        self.options["name"] = self.name
        self.cfg = cfg
        self._check_common()
        self.check_options()

    # --- config time (no file read, no model) -------------------------------------------------------------------

    def _check_common(self) -> None:
        self.integer("seed")
        if self.options["max_prompts"] is not None:
            self.integer("max_prompts", minimum=1)
        for key in ("hard_only", "overwrite"):
            if not isinstance(self.options[key], bool):
                raise ConfigError(f"attack.{key} must be true or false, got {self.options[key]!r}")
        if self.searches:
            for key in BUDGET_KEYS:
                self.integer(key, minimum=1, why="the search budget is iterations x population; 0 searches nothing")

    def check_options(self) -> None:
        """Check the attack's own keys (types and ranges)."""

    def check(self, method: Any, arch: str) -> None:
        """Refuse a method or architecture the attack cannot work on, with the reason (config time)."""

    def check_method(self, generation_options: Mapping[str, Any], method_name: str) -> None:
        """Refuse a defence by what its generation passes to the pipeline (stage start, before any model loads;
        asked only of attacks that depend on the method)."""

    def budget(self) -> dict[str, Any]:
        """What the attack spends per source prompt, as saved with its prompts."""
        if not self.searches:
            return {"iterations": 0, "population": 0, "evaluations": 0, "note": "no search"}
        iterations, population = self.options["iterations"], self.options["population"]
        return {"iterations": iterations, "population": population, "evaluations": iterations * population}

    def integer(self, key: str, minimum: int | None = None, why: str = "") -> int:
        value = self.options[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
                minimum is not None and value < minimum):
            rule = "an integer" + ("" if minimum is None else f" >= {minimum}")
            raise ConfigError(f"attack.{key} must be {rule}, got {value!r}" + (f" ({why})" if why else ""))
        return int(value)

    def number(self, key: str, low: float, high: float = math.inf) -> float:
        value = self.options[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not low <= value <= high:
            raise ConfigError(f"attack.{key} must be a number in [{low}, {high}], got {value!r}")
        return float(value)

    # --- with the model -----------------------------------------------------------------------------------------

    def setup(self, run: Any) -> None:
        """Once per stage, before the first prompt: `run` is the attack stage's AttackRun (respodiff/attacks/stage.py)
        with the loaded pipeline when `needs_model`."""

    def find(self, source: Mapping[str, Any], seed: int) -> FoundPrompt:
        """The attack prompt for one source prompt (a row with prompt_id, prompt, categories, hard)."""
        raise NotImplementedError


# --- the registry ---------------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator: make `cls` the attack named `cls.name`."""
    if not cls.name:
        raise ConfigError(f"{cls.__qualname__} needs a non-empty class attribute `name` to be registered")
    return add_to_registry(_REGISTRY, cls.name, cls, "attack")


_INFRASTRUCTURE = frozenset({"base", "stage", "store", "sources", "text", "denoiser", "word_tables"})


def _import_builtin_attacks() -> None:
    from .. import attacks

    import_submodules(attacks, _INFRASTRUCTURE)


def available_attacks() -> list[str]:
    _import_builtin_attacks()
    return sorted(_REGISTRY)


def attack_class(name: Any) -> type[Attack]:
    """The class registered as `name`; an unknown name is refused with the known ones."""
    if name not in _REGISTRY:
        _import_builtin_attacks()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown attack {name!r} (attack.name); known attacks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_attack(cfg: Mapping[str, Any]) -> Attack:
    """The run's attack from the whole resolved config; an attack.* key the attack does not read is refused."""
    block = cfg.get("attack")
    if not isinstance(block, Mapping):
        raise ConfigError(f"attack must be a block of settings (attack=<name>: {', '.join(available_attacks())}), "
                          f"got {block!r}")
    cls = attack_class(block.get("name"))
    unknown = sorted(set(block) - COMMON_KEYS - cls.keys)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'attack.{key}' for key in unknown)} for attack {cls.name!r}; "
                          f"it reads {sorted(COMMON_KEYS | cls.keys)}")
    return cls(block, cfg)
